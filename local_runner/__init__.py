"""The local runner: every function handler mounted as one ASGI app, served by uvicorn."""
