"""The OpenAPI document, with every error response as ``application/problem+json``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import limits, problems
from api.version import VERSION

TITLE = "TP Wallet Custody coordinator"


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, patched: error responses reference ``ProblemModel`` (RFC 9457),
    every operation with parameters documents its 422, FastAPI's own validation-error
    schemas go."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=TITLE,
        version=VERSION,
        routes=app.routes,
        description="Threshold-signing custody API. Errors are RFC 9457 problem documents.",
    )
    ref = {"$ref": "#/components/schemas/ProblemModel"}
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ProblemModel" not in comps:
        comps["ProblemModel"] = problems.ProblemModel.model_json_schema()
    for path in schema.get("paths", {}).values():
        for op in path.values():
            resp = op.setdefault("responses", {})
            for code, r in resp.items():
                if code.isdigit() and int(code) >= 400:
                    r["content"] = {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}}
            has_params = bool(op.get("parameters") or op.get("requestBody"))
            if has_params and "422" not in resp:
                resp["422"] = {
                    "description": "Request validation failed",
                    "content": {problems.PROBLEM_MEDIA_TYPE: {"schema": ref}},
                }
    limits.document(schema, ref)  # 429 everywhere, 413 with a body (api.limits)
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    app.openapi_schema = schema
    return schema
