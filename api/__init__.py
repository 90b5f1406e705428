"""The coordinator ASGI app: routes, auth, orchestration, persistence."""
