"""The HTTP service: `app.py` (FastAPI app, micro-batcher, middleware, `serve`), `settings.py` (its typed settings)."""
