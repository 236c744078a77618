"""vit-digits prediction service (FastAPI). Build the app with :func:`app.main.create_app`."""
