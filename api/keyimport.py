"""``python -m api import-key``: a restored key's PUBLIC values into a coordinator's key book.

For a disaster-recovery drill (``custody dr-drill``): the scratch coordinator did not run the
key's DKG, so it learns the key from the verified backup manifest: id, scheme, threshold,
holders, public key, verifying shares, network. Public values only; checked as a DKG result
is (:func:`api.crypto.check_public_key`) and written active with a ``key.imported`` audit
entry in the same transaction. The nodes, not this, decide whether they hold and use a share.
"""

from __future__ import annotations

from typing import Any

from api import audit, crypto
from api.db import Database, Key
from custody.domain import SCHEMES, is_valid_id

__all__ = ["import_key"]


def import_key(db: Database, info: dict[str, Any]) -> None:
    """Insert ``info`` (key_id, scheme, threshold, nodes, public_key, verifying_shares,
    network) as an active key; ValueError when malformed or already present."""
    kid, scheme, t = info["key_id"], info["scheme"], int(info["threshold"])
    if not is_valid_id(kid) or scheme not in SCHEMES:
        raise ValueError("key_id or scheme malformed")
    nodes = [str(n) for n in info["nodes"]]
    vs = {str(k): str(v) for k, v in dict(info["verifying_shares"]).items()}
    crypto.check_public_key(scheme, str(info["public_key"]), vs, t)
    with db.session() as s:
        if s.query(Key).filter(Key.id == kid).first() is not None:
            raise ValueError(f"key {kid} already exists")
        s.add(
            Key(
                id=kid,
                scheme=scheme,
                threshold=t,
                nodes=nodes,
                status="active",
                public_key=str(info["public_key"]),
                verifying_shares=vs,
                network=info.get("network"),
            )
        )
        audit.append(
            s,
            "coordinator",
            "key.imported",
            kid,
            {"scheme": scheme, "public_key": info["public_key"], "threshold": t, "nodes": nodes},
        )
