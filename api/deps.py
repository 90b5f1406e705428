"""Typed dependencies of the routes (``Annotated`` aliases, FastAPI style).

    async def get_key(key_id: str, repo: Repo, _: Reader) -> ...

Each resource the app holds is on ``app.state`` (set by :func:`api.app.create_app`); the
principal aliases admit only their roles (:func:`api.auth.require`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request

from api.auth import Principal, require
from api.coordinator import Coordinator
from api.db import Database
from api.idempotency import MAX_KEY_LEN
from api.repository import Repository
from api.settings import Settings
from custody.domain import ID_PATTERN, MAX_ID_LEN, READ_ROLES
from custody.models import NO_CONTROLS_PATTERN


def _coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator  # type: ignore[no-any-return]


def _repository(request: Request) -> Repository:
    return request.app.state.repository  # type: ignore[no-any-return]


def _database(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


CoordinatorDep = Annotated[Coordinator, Depends(_coordinator)]
Repo = Annotated[Repository, Depends(_repository)]
Db = Annotated[Database, Depends(_database)]
SettingsDep = Annotated[Settings, Depends(_settings)]

Admin = Annotated[Principal, Depends(require("admin"))]
Requester = Annotated[Principal, Depends(require("requester"))]
Approver = Annotated[Principal, Depends(require("approver", "admin"))]
Reader = Annotated[Principal, Depends(require(*READ_ROLES))]
Auditor = Annotated[Principal, Depends(require("admin", "auditor"))]

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LEN,
        pattern=NO_CONTROLS_PATTERN,
        description="unique per logical request; see DESIGN.md",
    ),
]
Cursor = Annotated[str | None, Query(max_length=200, pattern=NO_CONTROLS_PATTERN)]
# A key, sign-request or ceremony id in a path: the id rule (custody.domain), so a malformed
# id is a 422 naming the parameter before any lookup (PostgreSQL refuses a NUL in a query's
# text parameter: that was a 500).
IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]
