"""``python -m app``: serve, configured by the ``VIT_DIGITS_*`` settings.

One worker (``VIT_DIGITS_WORKERS=1``, what a container runs) is one uvicorn server in this process;
several run under gunicorn's arbiter (:mod:`app.server`). Either way, if the models cannot be
loaded the process exits non-zero with the reason (1 from one process, or 3 from uvicorn when it
loads them before listening; 3 from gunicorn with several workers), unless
``VIT_DIGITS_ON_LOAD_FAILURE=stay``, so that a restart policy or an operator sees it.
"""

from __future__ import annotations

from pydantic import ValidationError

from app.logs import configure_logging
from app.settings import Settings


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"vit-digits: invalid settings: {exc}") from None
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from app.server import serve_workers  # before anything imports prometheus_client or the models

        raise SystemExit(serve_workers(settings))
    serve_one(settings)


def serve_one(settings: Settings) -> None:
    """One uvicorn server in this process; exits non-zero if the models failed to load."""
    from app.main import create_app
    from app.server import serve_one as serve

    app = create_app(settings)
    serve(app, settings)  # a failed startup (models loaded before listening) exits there with uvicorn's status 3
    if app.state.load_error is not None and settings.on_load_failure == "exit":
        raise SystemExit(f"vit-digits: model loading failed: {app.state.load_error.detail}")


if __name__ == "__main__":
    main()
