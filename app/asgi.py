"""ASGI entry point for servers: ``uvicorn app.asgi:app``."""

from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings

_settings = Settings()
configure_logging(_settings.log_level)
app = create_app(_settings)
