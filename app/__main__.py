"""``python -m app``: serve with uvicorn, configured by the ``VIT_DIGITS_*`` settings.

One worker runs uvicorn in this process. Several workers are supervised here (:mod:`app.workers`):
the supervisor owns the listening socket and hands each connection to the next ready worker, so
they share the connections evenly instead of one worker accepting them all.
"""

from __future__ import annotations

import uvicorn

from app.logs import configure_logging
from app.settings import Settings
from app.workers import Supervisor, can_hand_over_connections


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    if settings.workers > 1 and can_hand_over_connections():
        raise SystemExit(Supervisor(settings).run())
    uvicorn.run(  # one worker; or a platform without SCM_RIGHTS, where uvicorn shares one socket
        "app.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
