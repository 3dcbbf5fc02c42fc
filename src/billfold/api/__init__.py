"""The HTTP API: FastAPI under /v1. Routers parse, call one service function, format."""
