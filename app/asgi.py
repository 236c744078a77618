"""ASGI entry point for servers run by hand: ``uvicorn app.asgi:app``.

``python -m app`` is the supported way (:mod:`app.server`): under another supervisor of several
processes, ``/metrics`` adds up over them only if ``PROMETHEUS_MULTIPROC_DIR`` names an empty
directory made for that server, and nothing drops the gauges of workers that exit.
"""

from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings

_settings = Settings()
configure_logging(_settings.log_level)
app = create_app(_settings)
