"""Passkeys registered in the console, pending governance (public data only).

A registration is an approver id and a :class:`custody.passkeys.PasskeyCredential`: the
credential id, its COSE public key, the RP id and the origin it was made on. It authorizes
nothing: it is what the officers put in an approver group by a governance version they sign
(:meth:`Registration.policy_entry` is the approver entry of a policy file). Kept in
``DATA_DIR/console-passkeys.json`` (mode 0600, rewritten whole under a lock), so a restart
keeps the list.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from custody import passkeys as pk

__all__ = ["Registration", "Registrations"]


@dataclass(frozen=True)
class Registration:
    approver_id: str
    credential: pk.PasskeyCredential
    registered_at: int

    def policy_entry(self) -> dict[str, Any]:
        """The approver entry of a policy file (``custody policy``, custody/policy_file.py)."""
        c = self.credential
        return {
            "id": self.approver_id,
            "passkey": {
                "credential_id": bytes_to_base64url(c.credential_id),
                "public_key": c.public_key.hex(),
                "rp_id": c.rp_id,
                "origins": list(c.origins),
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.policy_entry(), "registered_at": self.registered_at}


def _from_json(raw: dict[str, Any]) -> Registration:
    p = raw["passkey"]
    cred = pk.PasskeyCredential(
        base64url_to_bytes(p["credential_id"]),
        bytes.fromhex(p["public_key"]),
        p["rp_id"],
        tuple(p["origins"]),
    )
    return Registration(raw["id"], pk.check_credential(cred), int(raw["registered_at"]))


class Registrations:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> list[Registration]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [_from_json(r) for r in raw]

    def all(self) -> list[Registration]:
        with self._lock:
            return self._load()

    def of(self, approver_id: str) -> list[Registration]:
        return [r for r in self.all() if r.approver_id == approver_id]

    def by_credential(self, credential_id: bytes) -> Registration | None:
        return next((r for r in self.all() if r.credential.credential_id == credential_id), None)

    def add(self, approver_id: str, credential: pk.PasskeyCredential) -> Registration:
        reg = Registration(approver_id, credential, int(time.time()))
        with self._lock:
            regs = [
                r for r in self._load() if r.credential.credential_id != credential.credential_id
            ]
            regs.append(reg)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump([r.to_json() for r in regs], f, indent=1)
            os.replace(tmp, self.path)
        return reg
