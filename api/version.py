"""The coordinator's version (OpenAPI ``info.version``, ``GET /health``)."""

VERSION = "0.1.0"
