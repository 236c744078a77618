"""``python -m app``: serve with uvicorn, configured by the ``VIT_DIGITS_*`` settings."""

from __future__ import annotations

import uvicorn

from app.logs import configure_logging
from app.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "app.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
