"""``python -m api init|serve``: provision and run the coordinator.

``init --data-dir D [--principal ROLE=NAME]...`` creates the data directory (0700), the
database (0600), the coordinator's PKCS#11 token with its non-extractable Ed25519 key
(:mod:`api.keystore`) and, on the first run only, one credential per role (audited), each
belonging to the principal ``--principal`` names for its role (default: its own id); prints
``{"coordinator_public_key", "credentials": {role: token} | null}`` (tokens are shown
once; only their hashes are kept).
``db upgrade|current --data-dir D`` migrates the database (``$CUSTODY_DATABASE_URL``, else
``D/coordinator.db``) to the newest revision, or prints the revision it is at and the one
this release needs (exit 1 when they differ). ``serve`` (and ``init``) migrate at start
unless ``CUSTODY_DB_MIGRATE=false``; then ``db upgrade`` is the operator's step.
``serve --data-dir D --host H --port P`` runs the app under
:func:`custody.serving.serve` (body limit before any route, header/body timeouts, a
connection cap). What may be signed is the installed governance's policy, nothing else.

The process runs with umask 077: whatever it creates (database, WAL, token files, logs it
is pointed at) is readable by its own user only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from alembic.util import CommandError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from api import keystore, logs
from api.app import create_app
from api.auth import create_credential
from api.db import Credential, Database, current_revision, head_revision, migrate
from api.governance import GovernanceStore
from api.keyimport import import_key
from api.settings import Settings
from custody.domain import ROLES, is_valid_id
from custody.governance import GovernanceError
from custody.serving import ServiceLimits, serve


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m api")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--data-dir", required=True)
    i.add_argument(
        "--principal",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help="the principal a bootstrap credential belongs to (repeatable)",
    )
    t = sub.add_parser("trust", help="install the governance genesis (once)")
    t.add_argument("--data-dir", required=True)
    t.add_argument("--governance", required=True, help="signed genesis (canonical CBOR)")
    k = sub.add_parser("import-key", help="a restored key's public values (DR drill)")
    k.add_argument("--data-dir", required=True)
    k.add_argument("--key", required=True, help="JSON file of the key's public values")
    d = sub.add_parser("db", help="database schema migrations (Alembic)")
    d.add_argument("action", choices=["upgrade", "current"])
    d.add_argument("--data-dir", required=True)
    d.add_argument("--revision", default="head", help="upgrade: the target (default: head)")
    s = sub.add_parser("serve")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=7100)
    s.add_argument("--log-level", default=None, help="default: $CUSTODY_LOG_LEVEL, else INFO")
    s.add_argument("--dev", action="store_true", help="development only: plain HTTP to nodes")
    args = ap.parse_args(argv)

    os.umask(0o077)
    settings = Settings.from_env(args.data_dir)
    if args.cmd == "init":
        key = keystore.load_or_create(settings)
        key.close()
        db = Database(settings.database_url, settings.db_busy_timeout)
        db.migrate(apply=settings.db_migrate)
        keystore.private_files(settings)
        with db.session() as sess:
            have = sess.scalar(select(func.count()).select_from(Credential))
        creds = None
        if not have:
            names = dict(item.partition("=")[::2] for item in args.principal)
            if set(names) - set(ROLES) or not all(map(is_valid_id, names.values())):
                print(
                    f"--principal: ROLE=NAME, ROLE one of {list(ROLES)}, NAME an id",
                    file=sys.stderr,
                )
                db.close()
                return 2
            creds = {
                r: create_credential(db, r, label=f"bootstrap {r}", principal=names.get(r))[1]
                for r in ROLES
            }
        db.close()
        print(json.dumps({"coordinator_public_key": key.public_key.hex(), "credentials": creds}))
        return 0

    if args.cmd == "db":
        return _db(settings, args.action, args.revision)

    if args.cmd == "trust":
        try:
            body = GovernanceStore(settings.data_dir).install_genesis(
                Path(args.governance).read_bytes()
            )
        except (OSError, GovernanceError) as exc:
            print(f"refused ({getattr(exc, 'kind', 'unreadable')}): {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"cluster_id": body.cluster_id, "version": body.version}))
        return 0

    if args.cmd == "import-key":
        db = Database(settings.database_url)
        try:
            import_key(db, json.loads(Path(args.key).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        finally:
            db.close()
        return 0

    if args.dev:
        settings.dev = True
    refusal = settings.transport_refusal()
    if refusal is not None:
        print(f"refused: {refusal}", file=sys.stderr)
        return 2
    level = args.log_level or settings.log_level
    logs.configure(level)
    serve(
        create_app(settings),
        host=args.host,
        port=args.port,
        limits=ServiceLimits(),
        log_level=level.lower(),
    )
    return 0


def _db(settings: Settings, action: str, revision: str) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.database_url, settings.db_busy_timeout)
    try:
        if action == "upgrade":
            before = current_revision(db.engine)
            migrate(db.engine, revision)
            print(json.dumps({"from": before, "to": current_revision(db.engine)}))
            return 0
        have, head = current_revision(db.engine), head_revision()
        print(json.dumps({"current": have, "head": head}))
        return 0 if have == head else 1
    except (SQLAlchemyError, CommandError) as exc:
        print(f"db {action} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
