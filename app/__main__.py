"""``python -m app``: serve with uvicorn, configured by the ``VIT_DIGITS_*`` settings.

One worker runs uvicorn in this process. Several workers are supervised here (:mod:`app.workers`):
each binds its own listening socket with ``SO_REUSEPORT``, so that the kernel spreads connections
over them instead of letting one worker accept them all.
"""

from __future__ import annotations

import socket

import uvicorn

from app.logs import configure_logging
from app.settings import Settings
from app.workers import Supervisor


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    if settings.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        raise SystemExit(Supervisor(settings).run())
    uvicorn.run(  # one worker; or a platform without SO_REUSEPORT, where uvicorn shares one socket
        "app.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
