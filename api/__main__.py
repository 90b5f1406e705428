"""``python -m api init|serve``: provision and run the coordinator.

``init --data-dir D [--json]`` creates the database, the coordinator key (0600) and, on the
first run only, one credential per role; prints ``{"coordinator_public_key",
"credentials": {role: token} | null}`` (tokens are shown once; only their hashes are kept).
``serve --data-dir D --host H --port P [--dev]`` runs the app under uvicorn; ``--dev``
installs the allow-all policy of a dev cluster.
"""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from sqlalchemy import func, select

from api import logs
from api.app import create_app
from api.auth import create_credential
from api.db import Credential, Database
from api.keyfile import load_or_create_key
from api.settings import Settings
from custody.domain import ROLES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m api")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--data-dir", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=7100)
    s.add_argument("--dev", action="store_true", help="allow-all policy (dev cluster only)")
    s.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)

    settings = Settings.from_env(args.data_dir)
    if args.cmd == "init":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = load_or_create_key(settings)
        db = Database(settings.database_url)
        db.create_all()
        with db.session() as sess:
            have = sess.scalar(select(func.count()).select_from(Credential))
        creds = None
        if not have:
            creds = {r: create_credential(db, r, label=f"bootstrap {r}")[1] for r in ROLES}
        print(
            json.dumps(
                {"coordinator_public_key": bytes(key.verify_key).hex(), "credentials": creds}
            )
        )
        return 0

    settings.dev_allow_all = settings.dev_allow_all or args.dev
    logs.configure(args.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
