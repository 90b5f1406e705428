"""``custody demo`` part three (:mod:`custody.demo_payments`) on ONE real cluster started
with the payment service (``Cluster(payments=True)``, as ``custody up --with-payments``).

The demo's own output is checked line by line, and what it claims is checked again here
independently of our code: the payment service's read models over its API (statuses,
zero-sum ledger, zero breaks), eth-account recovering the key's address from the ETH
transaction custody signed (its keccak hash the mined one), and each pacs.008 file against
the XSD (xmlschema) and by lxml exclusive C14N plus PyNaCl. The demo runs a second time
on the same cluster; then the payment service is stopped and the demo run again: the
failing step is named and the exit code is non-zero.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
from eth_account import Account
from eth_utils.crypto import keccak
from lxml import etree
from rich.console import Console

from custody.client import CustodyClient
from custody.cluster import DEMO_ETH_DESTINATIONS, Cluster
from custody.demo import run_demo
from custody.demo_payments import SANCTIONED_ETH
from custody.exitcodes import ExitCode
from tests.payments.conftest import payments_cluster
from tests.payments.iso20022.test_settlement import independent_verify

ROOT = Path(__file__).resolve().parents[2]
PACS_XSD = ROOT / "payments" / "iso20022" / "schemas" / "pacs.008.001.08.xsd"
P = "{urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = payments_cluster(tmp_path_factory.mktemp("demo") / "c")
    try:
        c.start(timeout=120)
        yield c
    finally:
        c.stop()


def _demo(cluster: Cluster) -> tuple[int, str]:
    console = Console(record=True, width=200, color_system=None, force_terminal=False)
    code = run_demo(console, cluster.cluster_file, None, cluster.port)
    return code, console.export_text()


def test_demo_shows_payments_flow_and_every_claim_holds(cluster: Cluster) -> None:
    code, out = _demo(cluster)
    assert code == ExitCode.OK, out
    # what a newcomer sees
    tag = re.search(r"run (\w+): accounts funded", out)
    assert tag, out
    assert "pain.001.001.09 batch imported (5 transactions" in out
    assert re.search(r"DEMO-ZED-1 .*declined.*no settlement arrangement with NWBKGB2LXXX", out)
    assert "the same file imported again: the same 5 payments, nothing new" in out
    assert f"0.1 ETH to {SANCTIONED_ETH}: declined: destination {SANCTIONED_ETH} is on the " \
        "sanctions list: TEST SANCTIONED EXCHANGE LTD" in out  # fmt: skip
    assert "then awaiting_approval" in out and "approved by dev-approver-1, dev-approver-2" in out
    eth = re.search(r"mined on the in-process Ethereum chain: tx (0x[0-9a-f]{64}), block (\d+), "
                    r"receipt status 1", out)  # fmt: skip
    assert eth, out
    assert re.search(r"accepted by Bitcoin Core's script rules \(libbitcoinkernel\): txid "
                     r"[0-9a-f]{64}, block \d+, [1-9]\d* confirmation", out)  # fmt: skip
    assert re.search(r"BNPAFRPPXXX\W+2\W+1750\.25 .*valid \(signature, XSD\)", out), out
    assert re.search(r"INGBNL2AXXX\W+1\W+300\.00 .*valid \(signature, XSD\)", out), out
    assert ", 0 breaks," in out and "(balanced), replay agrees: True" in out
    # the claims, checked here over the payment service's API
    doc = cluster_doc(cluster)
    pay = doc["payments"]
    with httpx.Client(
        base_url=pay["url"], headers={"Authorization": f"Bearer {pay['token']}"}, timeout=30
    ) as h:
        items = h.get("/v1/payments", params={"limit": 200}).json()["items"]
        by_e2e = {p["end_to_end_id"]: p for p in items if p["end_to_end_id"]}
        t = tag.group(1)
        for e2e in ("DEMO-BOB-1", "DEMO-BOB-2", "DEMO-CAROL-1", "DEMO-DAVE-1"):
            assert by_e2e[f"{e2e}-{t}"]["status"] == "reconciled", by_e2e[f"{e2e}-{t}"]
        assert by_e2e[f"DEMO-ZED-1-{t}"]["status"] == "declined"
        sanctioned = [p for p in items if p["destination"] == SANCTIONED_ETH]
        assert [p["status"] for p in sanctioned] == ["declined"]
        (big,) = [p for p in items if p["rail"] == "ethereum" and p["status"] != "declined"]
        assert big["rail_ref"] == eth.group(1) and big["destination"] == DEMO_ETH_DESTINATIONS[0]
        assert big["status"] == "reconciled" and big["amount"] == 1_500_000_000  # gwei
        (btc,) = [p for p in items if p["rail"] == "bitcoin"]
        assert btc["status"] == "reconciled"
        check = h.get("/v1/ledger/check").json()
        assert set(check["sum_per_asset"].values()) == {0} and check["replay_differences"] == []
        recs = h.get("/v1/reconciliations").json()["items"]
        assert recs and recs[-1]["breaks"] == []
    # eth-account, not our code: the signed transaction is the key's, and the one mined
    with CustodyClient(doc["api_url"], doc["credentials"]["requester"]) as c:
        sr = c.get_sign_request(big["sign_request_id"])
        assert sr.status == "signed" and sr.approval is not None
        key = c.get_key(sr.key_id)
        raw = bytes.fromhex(sr.result.signed_tx.removeprefix("0x"))  # type: ignore[union-attr]
        assert Account.recover_transaction(raw) == key.addresses["ethereum"]
        assert "0x" + keccak(raw).hex() == big["rail_ref"]
        skey_id = (cluster.data_dir / "payments" / "settlement-key-id").read_text().strip()
        spk = bytes.fromhex(c.get_key(skey_id).public_key or "")
    # each pacs.008 file: the XSD and an lxml exc-C14N + PyNaCl verification
    files = sorted((cluster.data_dir / "demo").glob("stl_*.xml"))
    assert len(files) == 2, files
    xsd = xmlschema.XMLSchema(str(PACS_XSD))
    for f in files:
        data = f.read_bytes()
        independent_verify(data, spk)
        (document,) = etree.fromstring(data).findall(f"{P}Document")
        xsd.validate(etree.tostring(document).decode())
        # a tampered file fails the independent check too
        with pytest.raises(AssertionError):  # the digest no longer matches
            independent_verify(data.replace(b"DEMO-", b"DEMX-", 1), spk)


def test_the_demo_runs_again_on_the_same_cluster(cluster: Cluster) -> None:
    """A second run (new end-to-end ids and idempotency keys) pays again and reconciles
    with zero breaks; the first run's payments are not paid twice."""
    code, out = _demo(cluster)
    assert code == ExitCode.OK, out
    assert ", 0 breaks," in out
    pay = cluster_doc(cluster)["payments"]
    with httpx.Client(
        base_url=pay["url"], headers={"Authorization": f"Bearer {pay['token']}"}, timeout=30
    ) as h:
        items = h.get("/v1/payments", params={"limit": 200}).json()["items"]
    assert len(items) == 2 * 8  # per run: 5 from the batch, 2 ETH, 1 BTC
    assert len({p["rail_ref"] for p in items if p["rail"] in ("ethereum", "bitcoin")} - {None}) == 4


def test_a_failing_step_is_named_and_the_demo_exits_non_zero(cluster: Cluster) -> None:
    cluster.stop_proc("payments")
    code, out = _demo(cluster)
    assert code == ExitCode.FAILED, out
    assert "payments demo failed:" in out, out
    # the earlier parts still ran and verified
    assert "The demo policy on Ethereum transfers" in out


def cluster_doc(cluster: Cluster) -> dict[str, Any]:
    return dict(json.loads(cluster.cluster_file.read_text()))
