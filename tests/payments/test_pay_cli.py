"""``custody pay ...`` against a real payment service over HTTP (uvicorn in a thread, the
book rail with an in-process 2-of-3 FROST key; no worker, so payments stay authorized)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from custody.cli import app
from payments import risk
from payments.app import create_app
from payments.book import BookRail
from payments.core import PaymentCore
from payments.db import create_schema, make_engine
from payments.sanctions import SanctionsList
from payments.service import book_destination_check
from payments.settings import PACKAGE_DATA
from tests.payments.threshold import ThresholdEd25519

TOKEN = "cli-token-" + "z" * 20


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    eng = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    create_schema(eng)
    book = BookRail(
        make_engine(f"sqlite:///{tmp_path / 'b.db'}"), "key_b", ThresholdEd25519().public_key
    )
    core = PaymentCore(
        eng,
        SanctionsList.load(PACKAGE_DATA / "sanctions"),
        risk.Settings(),
        {"book": book},
        {"book": book_destination_check},
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(core, TOKEN), host="127.0.0.1", port=port, log_config=None)
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)
    eng.dispose()


def run(url: str, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["pay", *args, "--payments-url", url, "--payments-token", TOKEN])
    return r.exit_code, r.output


def test_create_list_show_cancel_reconcile(served: str, tmp_path: Path) -> None:
    h = httpx.Client(base_url=served, headers={"Authorization": f"Bearer {TOKEN}"})
    ids = []
    for owner in ("ann", "ben"):
        r = h.post(
            "/v1/accounts",
            json={"owner": owner, "asset": "USDC", "decimals": 2},
            headers={"Idempotency-Key": owner},
        )
        ids.append(r.json()["id"])
    h.post(
        f"/v1/accounts/{ids[0]}/deposits",
        json={"amount": 100, "reference": "r"},
        headers={"Idempotency-Key": "d"},
    )
    code, text = run(
        served, "create", "--account", ids[0], "--amount", "60", "--to", ids[1], "--json"
    )
    assert code == 0, text
    p = json.loads(text)
    assert p["status"] == "authorized"
    code, text = run(served, "create", "--account", ids[0], "--amount", "60", "--to", ids[1])
    assert code == 4 and "insufficient funds" in text  # declined: exit REFUSED, reasons shown
    code, text = run(served, "list", "--json")
    assert code == 0 and [x["status"] for x in json.loads(text)["items"]] == [
        "authorized",
        "declined",
    ]
    code, text = run(served, "show", p["id"], "--events")
    assert code == 0 and "PaymentAuthorized" in text and "authorized" in text
    code, text = run(served, "cancel", p["id"], "--json")
    assert code == 0 and json.loads(text)["status"] == "cancelled"
    code, text = run(served, "show", "pay_missing")
    assert code == 3 and "404" in text  # NOT_FOUND
    code, text = run(served, "reconcile", "--json")
    assert code == 0 and json.loads(text)["breaks"] == []
    code, text = run(served, "settle")
    assert code == 0 and "no confirmed payments" in text


def test_iso20022_commands_without_the_rail_and_on_a_bad_file(served: str, tmp_path: Path) -> None:
    """A service built without the pain.001 parser says so (501: exit 6); settle --out
    with nothing to settle writes nothing; verify-settlement refuses a file that is no
    signed pacs.008, naming the check (exit 6), and wants a trusted key (exit 2)."""
    f = tmp_path / "batch.xml"
    f.write_text("<Document/>")
    code, text = run(served, "import", str(f))
    assert code == 6 and "not available in this build" in text
    code, text = run(served, "settle", "--out", str(tmp_path / "out"))
    assert code == 0 and list((tmp_path / "out").iterdir()) == []
    r = CliRunner().invoke(app, ["pay", "verify-settlement", str(f)])
    assert r.exit_code == 2 and "--public-key" in r.output
    r = CliRunner().invoke(app, ["pay", "verify-settlement", str(f), "--public-key", "11" * 32])
    assert r.exit_code == 6 and "INVALID: check wrapping failed" in r.output, r.output


def test_unreachable_and_missing_cluster_file(tmp_path: Path) -> None:
    code, text = run("http://127.0.0.1:1", "list")
    assert code == 5 and "unreachable" in text
    r = CliRunner().invoke(app, ["pay", "list", "--cluster", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "not found" in r.output
