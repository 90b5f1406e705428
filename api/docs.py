"""``/problems``: the catalogue of problem types, where every ``type`` resolves.

A problem document's ``type`` is ``urn:tpwc:problem:<slug>``; ``GET /problems/<slug>`` (or
``GET /problems/urn:tpwc:problem:<slug>``) answers its entry of
:data:`custody.problem_types.CATALOGUE` (the source of ``docs/PROBLEMS.md``) as JSON, or as
HTML when the client asks for ``text/html`` (a browser). No credential: it is documentation.
Swagger UI (``/docs``) and ReDoc (``/redoc``) are served by fastapi-offline (``api.app``).
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from api.problems import Problem, problem_responses
from custody import problem_types as pt
from custody.models import ProblemTypeList, ProblemTypeOut

router = APIRouter(prefix="/problems", tags=["problems"])

_HTML_EXAMPLE = "<!doctype html><html><head><title>Problem types</title></head>...</html>"
_HTML = {"text/html": {"schema": {"type": "string"}, "example": _HTML_EXAMPLE}}


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def _code(text: str) -> str:
    """Markdown's `code` as HTML, escaped."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _page(title: str, entries: list[pt.ProblemType]) -> str:
    rows = "".join(
        f'<tr id="{html.escape(p.slug)}"><td><a href="/problems/{html.escape(p.slug)}">'
        f"<code>{html.escape(p.type)}</code></a></td><td>{p.status}</td>"
        f"<td>{html.escape(p.family.value)}</td><td>{html.escape(p.title)}</td>"
        f"<td>{_code(p.meaning)}</td></tr>"
        for p in entries
    )
    families = "".join(
        f"<dt>{html.escape(f.value)}</dt><dd>{_code(pt.FAMILY_TEXT[f])}</dd>" for f in pt.Family
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:.3em;vertical-align:top}table{border-collapse:collapse}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Every error is an RFC 9457 problem document; its <code>type</code> is one of "
        'these. <a href="/problems">All problem types</a> · <a href="/docs">API docs</a></p>'
        "<table><tr><th>type</th><th>status</th><th>family</th><th>title</th>"
        f"<th>meaning</th></tr>{rows}</table><h2>Families</h2><dl>{families}</dl>"
        "</body></html>"
    )


@router.get(
    "",
    response_model=ProblemTypeList,
    responses={200: {"content": _HTML}},
    summary="List every problem type",
)
async def list_problem_types(request: Request) -> Any:
    """Every problem type the coordinator emits, with its status, family and meaning (the
    content of docs/PROBLEMS.md). JSON, or HTML when you ask for ``text/html``."""
    entries = list(pt.CATALOGUE.values())
    if _wants_html(request):
        return HTMLResponse(_page("Problem types", entries))
    return {"items": [p.as_dict() for p in entries]}


@router.get(
    "/{ref}",
    response_model=ProblemTypeOut,
    responses={200: {"content": _HTML}, **problem_responses(404)},
    summary="Resolve a problem type",
)
async def get_problem_type(
    ref: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:._-]+$")],
    request: Request,
) -> Any:
    """What one problem type means: ``ref`` is its slug (``policy-denied``) or its whole
    ``type`` (``urn:tpwc:problem:policy-denied``). JSON, or HTML for ``text/html``."""
    entry = pt.lookup(ref)
    if entry is None:
        raise Problem(404, "not-found", "Not found", f"no problem type {ref!r}: see /problems")
    if _wants_html(request):
        return HTMLResponse(_page(entry.title, [entry]))
    return entry.as_dict()


__all__ = ["router"]
