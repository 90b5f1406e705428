"""Typed dependencies of the routes (``Annotated`` aliases, FastAPI style).

    async def get_key(key_id: str, repo: Repo, _: Reader) -> ...

Each resource the app holds is on ``app.state`` (set by :func:`api.app.create_app`); the
principal aliases admit only their roles (:func:`api.auth.require`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from api.auth import Principal, require
from api.coordinator import Coordinator
from api.db import Database
from api.idempotency import MAX_KEY_LEN
from api.repository import Repository
from api.settings import Settings
from custody.domain import READ_ROLES


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
        description="unique per logical request; see DESIGN.md",
    ),
]
Cursor = Annotated[str | None, Query(max_length=200)]
