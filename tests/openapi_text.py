"""The strings of an OpenAPI document's requests, and whether each refuses control characters.

Used by tests/api/test_text_fields.py (the coordinator) and tests/payments/test_api_text.py
(the payment core): every string a request carries must have an enum or a pattern that
takes no C0 control character and no DEL (PostgreSQL cannot store a NUL in a text column).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

CONTROLS = ["\x00", "\x01", "\x1f", "\x7f", "\n"]


def _strings(
    spec: dict[str, Any], schema: dict[str, Any], where: str
) -> Iterator[tuple[str, dict]]:
    """Every string schema under ``schema`` with the place it sits."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        yield from _strings(spec, spec["components"]["schemas"][name], f"{where}<{name}>")
        return
    for k in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(k, []):
            yield from _strings(spec, sub, where)
    kind = schema.get("type")
    if kind == "string":
        yield where, schema
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            yield from _strings(spec, sub, f"{where}.{name}")
        for sub in schema.get("patternProperties", {}).values():
            yield from _strings(spec, sub, f"{where}.*")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            yield from _strings(spec, extra, f"{where}.*")
    elif kind == "array":
        yield from _strings(spec, schema.get("items", {}), f"{where}[]")


def request_strings(spec: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                if "$ref" in p:
                    p = spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]]
                yield from _strings(
                    spec, p["schema"], f"{method.upper()} {path} {p['in']}:{p['name']}"
                )
            for media in (op.get("requestBody") or {}).get("content", {}).values():
                yield from _strings(spec, media.get("schema", {}), f"{method.upper()} {path} body")


def refuses_controls(schema: dict[str, Any]) -> bool:
    if "enum" in schema or "const" in schema:
        return all(
            isinstance(v, str) and not re.search(r"[\x00-\x1f\x7f]", v)
            for v in schema.get("enum", [schema.get("const")])
        )
    if schema.get("format") == "date-time":
        return True
    pattern = schema.get("pattern")
    if pattern is None:
        return False
    # JSON Schema's (and pydantic's Rust regex's) `$` is the end of the text; Python's also
    # matches before a final newline.
    pattern = re.sub(r"\$$", r"\\Z", pattern)
    return not any(re.search(pattern, s) for c in CONTROLS for s in (c, f"a{c}", f"{c}a", f"a{c}a"))
