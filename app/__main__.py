"""``python -m app``: serve with uvicorn, configured by the ``VIT_DIGITS_*`` settings.

One worker runs uvicorn in this process. Several workers are supervised here (:mod:`app.workers`):
the supervisor owns the listening socket and hands each connection to the next ready worker, so
they share the connections evenly instead of one worker accepting them all. Either way, if the
models cannot be loaded the process exits non-zero (1; 3 from uvicorn when one worker loads them
before listening) with the reason (unless ``VIT_DIGITS_ON_LOAD_FAILURE=stay``), so that a restart
policy or an operator sees it.
"""

from __future__ import annotations

import logging

import uvicorn
from pydantic import ValidationError

from app.logs import configure_logging
from app.server import uvicorn_options
from app.settings import Settings
from app.workers import Supervisor, can_hand_over_connections


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"vit-digits: invalid settings: {exc}") from None
    configure_logging(settings.log_level)
    if settings.workers > 1 and can_hand_over_connections():
        raise SystemExit(Supervisor(settings).run())
    if settings.workers > 1:  # a platform without SCM_RIGHTS: uvicorn's workers share one socket
        # uvicorn spawns these workers and pickles their config, which a protocol class built at run
        # time cannot be; they run uvicorn's own protocol, without our header size and time limits
        logging.getLogger(__name__).warning("no connection hand-over here: header limits do not apply")
        options = {k: v for k, v in uvicorn_options(settings).items() if k != "http"}
        uvicorn.run("app.asgi:app", host=settings.host, port=settings.port, workers=settings.workers, **options)
        return
    serve_one(settings)


def serve_one(settings: Settings) -> None:
    """One uvicorn server in this process; exits non-zero if the models failed to load."""
    from app.main import create_app  # imports torch: not needed by the supervisor of several workers

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, **uvicorn_options(settings)))

    def exit_server() -> None:
        server.should_exit = True

    app.state.exit_server = exit_server
    server.run()  # a failed startup (models loaded before listening) exits here with uvicorn's status 3
    if app.state.load_error is not None and settings.on_load_failure == "exit":
        raise SystemExit(f"vit-digits: model loading failed: {app.state.load_error.detail}")


if __name__ == "__main__":
    main()
