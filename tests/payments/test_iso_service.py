"""ISO 20022 through the payment service: a real cluster (coordinator, three signer-node
processes) started with the payment service (``Cluster(payments=True)``, as ``custody up
--with-payments``: its book and settlement Ed25519 keys made by DKG on first run, the dev
policy's ``eur-settlement`` rules), driven by ``custody pay`` only.

A pain.001.001.09 batch is imported (payments to another bank queued for settlement, one
to a customer of this bank on the book rail, one to a bank without a settlement
arrangement declined); the same file again creates nothing; malformed files are refused
with line and field; ``settle --out`` writes one pacs.008 per counterparty bank, each
valid against the XSD and verified by ``verify-settlement`` AND by an independent lxml
exc-C14N + PyNaCl check; a tampered file fails; a settlement above 10 000.00 EUR waits for
two treasury approvals; confirmations make the payments reconciled. ONE cluster for the
module."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
from lxml import etree
from typer.testing import CliRunner

from custody.cli import app
from custody.client import CustodyClient
from custody.cluster import Cluster
from custody.exitcodes import ExitCode
from tests.payments.conftest import payments_cluster
from tests.payments.iso20022.test_settlement import independent_verify

ROOT = Path(__file__).resolve().parents[2]
PACS_XSD = ROOT / "payments" / "iso20022" / "schemas" / "pacs.008.001.08.xsd"
OUR_BIC = "DEUTDEFFXXX"  # PAYMENTS_BANK_BIC's default
ALICE = "DE62370400440532013001"  # customers of this bank (their account owner is the IBAN)
DAVE = "DE35370400440532013002"
BOB = ("BNPAFRPP", "FR7630006000011234567890189")  # in the demo counterparties
CAROL = ("INGBNL2A", "NL91ABNA0417164300")
ZED = ("NWBKGB2L", "GB29NWBK60161331926819")  # no settlement arrangement
P = "{urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08}"


@dataclass
class Env:
    cluster: Cluster
    doc: dict[str, Any]
    http: httpx.Client

    @property
    def cj(self) -> str:
        return str(self.cluster.cluster_file)

    def pay(self, *args: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["pay", *args, "--cluster", self.cj])
        return r.exit_code, r.output

    def cli(self, *args: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, [*args, "--cluster", self.cj])
        return r.exit_code, r.output

    def payments(self) -> list[dict[str, Any]]:
        return list(self.http.get("/v1/payments", params={"limit": 200}).json()["items"])

    def by_e2e(self) -> dict[str, dict[str, Any]]:
        return {p["end_to_end_id"]: p for p in self.payments()}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d = tmp_path_factory.mktemp("cluster")
    cluster = payments_cluster(
        d / "c", env={"CUSTODY_POOL_INTERVAL": "0.3", "CUSTODY_ROUND_TIMEOUT": "5"}
    )
    try:
        doc = cluster.start(timeout=120)
        pay = doc["payments"]
        http = httpx.Client(
            base_url=pay["url"], headers={"Authorization": f"Bearer {pay['token']}"}, timeout=60
        )
        accounts = {}
        for owner in (ALICE, DAVE):
            r = http.post(
                "/v1/accounts",
                json={"owner": owner, "asset": "EUR", "decimals": 2},
                headers={"Idempotency-Key": owner},
            )
            assert r.status_code == 201, r.text
            accounts[owner] = r.json()["id"]
        r = http.post(
            f"/v1/accounts/{accounts[ALICE]}/deposits",
            json={"amount": 5_000_000, "reference": "seed"},  # 50 000.00 EUR
            headers={"Idempotency-Key": "seed"},
        )
        assert r.status_code == 201, r.text
        yield Env(cluster, doc, http)
        http.close()
    finally:
        cluster.stop()


def pain001(
    msg_id: str, txs: list[tuple[str, str, str, str]], debtor: str = ALICE, ccy: str = "EUR"
) -> bytes:
    """A pain.001.001.09 file from ALICE (this bank) with ``(e2e, amount, BIC, IBAN)``."""
    total = sum(Decimal(t[1]) for t in txs)
    body = "".join(
        f"<CdtTrfTxInf><PmtId><EndToEndId>{e2e}</EndToEndId></PmtId>"
        f'<Amt><InstdAmt Ccy="{ccy}">{amt}</InstdAmt></Amt>'
        f"<CdtrAgt><FinInstnId><BICFI>{bic}</BICFI></FinInstnId></CdtrAgt>"
        f"<Cdtr><Nm>Creditor {e2e}</Nm></Cdtr>"
        f"<CdtrAcct><Id><IBAN>{iban}</IBAN></Id></CdtrAcct>"
        f"<RmtInf><Ustrd>invoice {e2e}</Ustrd></RmtInf></CdtTrfTxInf>\n"
        for e2e, amt, bic, iban in txs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">\n'
        f"<CstmrCdtTrfInitn><GrpHdr><MsgId>{msg_id}</MsgId>"
        f"<CreDtTm>2026-12-01T07:45:00Z</CreDtTm><NbOfTxs>{len(txs)}</NbOfTxs>"
        f"<CtrlSum>{total}</CtrlSum><InitgPty><Nm>Alice GmbH</Nm></InitgPty></GrpHdr>\n"
        f"<PmtInf><PmtInfId>{msg_id}-1</PmtInfId><PmtMtd>TRF</PmtMtd>"
        f"<NbOfTxs>{len(txs)}</NbOfTxs><CtrlSum>{total}</CtrlSum>"
        "<ReqdExctnDt><Dt>2026-12-02</Dt></ReqdExctnDt><Dbtr><Nm>Alice GmbH</Nm></Dbtr>"
        f"<DbtrAcct><Id><IBAN>{debtor}</IBAN></Id></DbtrAcct>"
        f"<DbtrAgt><FinInstnId><BICFI>{OUR_BIC}</BICFI></FinInstnId></DbtrAgt>\n"
        f"{body}</PmtInf></CstmrCdtTrfInitn></Document>\n"
    ).encode()


BATCH = [
    ("E2E-BOB-1", "1250.00", *BOB),
    ("E2E-BOB-2", "500.25", *BOB),
    ("E2E-CAROL-1", "300.00", *CAROL),
    ("E2E-DAVE-1", "100.00", OUR_BIC, DAVE),
    ("E2E-ZED-1", "20.00", *ZED),
]


def settlement_key(env: Env) -> str:
    return (env.cluster.data_dir / "payments" / "settlement-key-id").read_text().strip()


def public_key(env: Env) -> str:
    with CustodyClient(env.doc["api_url"], env.doc["credentials"]["auditor"]) as c:
        key = c.get_key(settlement_key(env))
    assert key.scheme == "ed25519" and key.public_key, key
    return key.public_key


def test_import_maps_each_transaction_and_is_idempotent(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "batch.xml"
    f.write_bytes(pain001("BATCH-1", BATCH))
    code, out = env.pay("import", str(f), "--json")
    assert code == 0, out
    got = {p["end_to_end_id"]: p for p in json.loads(out)["payments"]}
    assert list(got) == [t[0] for t in BATCH]
    bob = got["E2E-BOB-1"]
    assert (bob["rail"], bob["status"], bob["amount"], bob["asset"]) == (
        "iso20022", "authorized", 125_000, "EUR",
    )  # fmt: skip
    assert bob["destination"] == "BNPAFRPPXXX/FR7630006000011234567890189"
    assert got["E2E-BOB-2"]["amount"] == 50_025
    assert got["E2E-CAROL-1"]["rail"] == "iso20022"
    assert got["E2E-DAVE-1"]["rail"] == "book"  # a customer of this bank: a book transfer
    zed = got["E2E-ZED-1"]
    assert zed["status"] == "declined"
    assert any("no settlement arrangement with NWBKGB2LXXX" in r for r in zed["reasons"]), zed
    before = len(env.payments())
    code, out = env.pay("import", str(f), "--json")  # the same file again
    assert code == 0, out
    again = {p["end_to_end_id"]: p["id"] for p in json.loads(out)["payments"]}
    assert again == {k: v["id"] for k, v in got.items()}
    assert len(env.payments()) == before == len(BATCH)
    code, out = env.pay("import", str(f))  # the table form names each payment
    assert code == 0 and "E2E-CAROL-1" in out, out


def test_a_malformed_batch_is_refused_with_line_and_field(env: Env, tmp_path: Path) -> None:
    before = len(env.payments())
    bad_iban = "FR7630006000011234567890188"  # check digits wrong
    f = tmp_path / "bad.xml"
    f.write_bytes(
        pain001("BATCH-BAD", [("E2E-X-1", "10.00", *BOB), ("E2E-X-2", "5.00", BOB[0], bad_iban)])
    )
    code, out = env.pay("import", str(f))
    assert code == ExitCode.USAGE, out
    assert "line 6" in out and "CdtTrfTxInf[2]/CdtrAcct/Id/IBAN" in out, out
    assert "not a valid IBAN" in out, out
    # a debtor that is no customer here: the mapping names the line and DbtrAcct
    stranger = "DE08370400440532013003"
    f.write_bytes(pain001("BATCH-WHO", [("E2E-Y-1", "10.00", *BOB)], debtor=stranger))
    code, out = env.pay("import", str(f))
    assert code == ExitCode.USAGE, out
    assert "PmtInf[1]/DbtrAcct/Id/IBAN" in out and stranger in out, out
    # the API answers an RFC 9457 problem listing each problem
    r = env.http.post("/v1/payments/imports", content=f.read_bytes())
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["type"].endswith("payments.invalid-batch")
    assert doc["errors"][0]["line"] == 5 and doc["errors"][0]["path"].endswith("DbtrAcct/Id/IBAN")
    assert len(env.payments()) == before  # nothing of a refused file was imported


def _wait_confirmed(env: Env, e2e: str) -> None:
    deadline = time.monotonic() + 60
    while env.by_e2e()[e2e]["status"] != "confirmed":
        assert time.monotonic() < deadline, env.by_e2e()[e2e]
        time.sleep(0.2)


def test_settle_writes_verified_pacs008_files_and_confirm_reconciles(
    env: Env, tmp_path: Path
) -> None:
    _wait_confirmed(env, "E2E-DAVE-1")  # the book transfer, driven by the worker
    out_dir = tmp_path / "out"
    code, out = env.pay("settle", "--out", str(out_dir), "--json")
    assert code == 0, out
    doc = json.loads(out)
    msgs = {m["counterparty"]: m for m in doc["messages"]}
    assert set(msgs) == {"BNPAFRPPXXX", "INGBNL2AXXX"}, doc
    assert all(m["status"] == "sent" for m in msgs.values()), doc
    assert (msgs["BNPAFRPPXXX"]["net_amount"], msgs["BNPAFRPPXXX"]["payment_count"]) == (175_025, 2)
    assert msgs["INGBNL2AXXX"]["net_amount"] == 30_000
    pk = public_key(env)
    xsd = xmlschema.XMLSchema(str(PACS_XSD))
    for bic, m in msgs.items():
        path = out_dir / f"{m['id']}.xml"
        data = path.read_bytes()
        root = etree.fromstring(data)
        (document,) = root.findall(f"{P}Document")
        xsd.validate(etree.tostring(document).decode())  # the Document against the XSD
        independent_verify(data, bytes.fromhex(pk))  # lxml exc-C14N + PyNaCl, not ours
        tx = document.find(f"{P}FIToFICstmrCdtTrf/{P}CdtTrfTxInf")
        assert tx is not None
        assert tx.findtext(f"{P}CdtrAgt/{P}FinInstnId/{P}BICFI") == bic
        assert tx.findtext(f"{P}PmtId/{P}UETR") == m["uetr"]
        ustrd = [u.text for u in tx.findall(f"{P}RmtInf/{P}Ustrd")]
        want = ["E2E-BOB-1", "E2E-BOB-2"] if bic.startswith("BNPA") else ["E2E-CAROL-1"]
        assert ustrd == want
        amount = tx.findtext(f"{P}IntrBkSttlmAmt")
        assert Decimal(amount or "0") == Decimal(m["net_amount"]) / 100
        code, out = env.pay("verify-settlement", str(path), "--public-key", pk, "--json")
        assert code == 0, out
        rep = json.loads(out)
        assert rep["valid"] and rep["schema_checked"], rep
        # by the key id, its public key fetched from the cluster
        code, out = env.pay("verify-settlement", str(path), "--key-id", settlement_key(env))
        assert code == 0 and "valid" in out, out
        # tampered: the amount raised by one cent, and a signature from another key
        forged = tmp_path / f"{m['id']}-forged.xml"
        raised = f"{Decimal(amount or '0') + Decimal('0.01')}"
        forged.write_bytes(data.replace(f">{amount}<".encode(), f">{raised}<".encode()))
        code, out = env.pay("verify-settlement", str(forged), "--public-key", pk, "--json")
        assert code == ExitCode.FAILED, out
        rep = json.loads(out)
        assert not rep["valid"] and rep["summary"] is None
        failed = [c["name"] for c in rep["checks"] if not c["ok"]]
        assert failed and failed[0] in ("document", "digest"), rep
        code, out = env.pay("verify-settlement", str(path), "--public-key", "11" * 32)
        assert code == ExitCode.FAILED and "INVALID" in out, out
    pays = env.by_e2e()
    for e2e in ("E2E-BOB-1", "E2E-BOB-2", "E2E-CAROL-1"):
        assert pays[e2e]["status"] == "settled", pays[e2e]
        assert pays[e2e]["settlement_id"] in {m["id"] for m in msgs.values()}
    # the same window again: nothing new, nothing paid twice
    code, out = env.pay("settle", "--json")
    assert code == 0 and json.loads(out)["messages"] == [], out
    # the ledger: every asset sums to zero, replay agrees; Alice paid 2150.25 EUR
    check = env.http.get("/v1/ledger/check").json()
    assert check["sum_per_asset"]["EUR"] == 0 and check["replay_differences"] == [], check
    alice = [a for a in env.http.get("/v1/accounts").json()["items"] if a["owner"] == ALICE]
    assert alice[0]["balance"] == 5_000_000 - 125_000 - 50_025 - 30_000 - 10_000
    # confirmations by the operator, then reconciliation
    for m in msgs.values():
        code, out = env.pay(
            "confirm-settlement", m["id"], "--amount", str(m["net_amount"]),
            "--reference", f"stmt-{m['id']}",
        )  # fmt: skip
        assert code == 0, out
    stl = {s["id"]: s for s in env.http.get("/v1/settlements").json()["items"]}
    book = [s["id"] for s in stl.values() if s["counterparty"] == "book"]
    for sid in book:
        code, out = env.pay("confirm-settlement", sid, "--amount", str(stl[sid]["net_amount"]),
                            "--reference", "book")  # fmt: skip
        assert code == 0, out
    code, out = env.pay("reconcile", "--json")
    assert code == 0, out
    pays = env.by_e2e()
    for e2e in ("E2E-BOB-1", "E2E-BOB-2", "E2E-CAROL-1", "E2E-DAVE-1"):
        assert pays[e2e]["status"] == "reconciled", pays[e2e]


def test_a_large_settlement_waits_for_two_approvals(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "large.xml"
    f.write_bytes(pain001("BATCH-LARGE", [("E2E-BIG-1", "12000.00", *BOB)]))
    code, out = env.pay("import", str(f))
    assert code == 0, out
    out_dir = tmp_path / "out"
    code, out = env.pay("settle", "--out", str(out_dir), "--json")
    assert code == ExitCode.PENDING, out
    (m,) = json.loads(out)["messages"]
    assert m["status"] == "pending_approval" and m["net_amount"] == 1_200_000
    assert env.by_e2e()["E2E-BIG-1"]["status"] == "authorized"  # nothing moved yet
    gov = env.doc["dev_governance"]
    for key_file in sorted(gov["approvers"])[:2]:
        code, out = env.cli(
            "approve", m["sign_request_id"], "--key-file", key_file,
            "--passphrase-file", gov["approver_passphrase_file"], "--yes",
        )  # fmt: skip
        assert code == 0, out
    deadline = time.monotonic() + 60
    while True:
        code, out = env.pay("settle", "--out", str(out_dir), "--json")
        msgs = json.loads(out)["messages"]
        if code == 0 and msgs and msgs[0]["status"] == "sent":
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.5)
    path = out_dir / f"{m['id']}.xml"
    independent_verify(path.read_bytes(), bytes.fromhex(public_key(env)))
    code, out = env.pay("verify-settlement", str(path), "--public-key", public_key(env))
    assert code == 0, out
    assert env.by_e2e()["E2E-BIG-1"]["status"] == "settled"


def _approve_twice(env: Env, request_id: str) -> None:
    gov = env.doc["dev_governance"]
    for key_file in sorted(gov["approvers"])[:2]:
        code, out = env.cli(
            "approve", request_id, "--key-file", key_file,
            "--passphrase-file", gov["approver_passphrase_file"], "--yes",
        )  # fmt: skip
        assert code == 0, out


def test_a_payment_cancelled_while_its_settlement_waits_voids_it(env: Env, tmp_path: Path) -> None:
    """Cancelled while the pacs.008 carrying it waited for approvals: once signed, the file
    is NOT released (it would pay a payment the ledger refunded); the other payment is
    netted again in the next window, alone."""
    f = tmp_path / "void.xml"
    f.write_bytes(
        pain001("BATCH-VOID", [("E2E-VOID-1", "15000.00", *BOB), ("E2E-VOID-2", "20.00", *BOB)])
    )
    assert env.pay("import", str(f))[0] == 0
    out_dir = tmp_path / "out"
    code, out = env.pay("settle", "--out", str(out_dir), "--json")
    assert code == ExitCode.PENDING, out
    (m,) = json.loads(out)["messages"]
    assert (m["net_amount"], m["payment_count"]) == (1_502_000, 2)
    code, out = env.pay("cancel", env.by_e2e()["E2E-VOID-1"]["id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled", out
    _approve_twice(env, m["sign_request_id"])
    deadline = time.monotonic() + 60
    while True:
        code, out = env.pay("settle", "--out", str(out_dir), "--json")
        got = {x["id"]: x for x in json.loads(out)["messages"]}
        if got.get(m["id"], {}).get("status") == "void":
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.5)
    assert "E2E-VOID-1" in (got[m["id"]]["detail"] or "") or "changed" in got[m["id"]]["detail"]
    assert not (out_dir / f"{m['id']}.xml").exists()
    r = env.http.get(f"/v1/settlements/{m['id']}/file")
    assert r.status_code == 409 and r.json()["field"] == "status"
    # the next window nets the remaining payment alone, under the limit: released
    deadline = time.monotonic() + 60
    while env.by_e2e()["E2E-VOID-2"]["status"] != "settled":
        assert time.monotonic() < deadline, env.by_e2e()["E2E-VOID-2"]
        env.pay("settle", "--out", str(out_dir))
        time.sleep(0.3)
    p2 = env.by_e2e()["E2E-VOID-2"]
    data = (out_dir / f"{p2['settlement_id']}.xml").read_bytes()
    independent_verify(data, bytes.fromhex(public_key(env)))
    assert b"<Ustrd>E2E-VOID-2</Ustrd>" in data and b"E2E-VOID-1" not in data
    assert env.by_e2e()["E2E-VOID-1"]["status"] == "cancelled"
    check = env.http.get("/v1/ledger/check").json()
    assert check["sum_per_asset"]["EUR"] == 0 and check["replay_differences"] == [], check


def test_a_settlement_the_policy_denies_fails_its_payments(env: Env, tmp_path: Path) -> None:
    """No rule allows GBP settlements: custody refuses (403), the payment fails with that
    reason and its hold is released; nothing is written."""
    r = env.http.post(
        "/v1/accounts",
        json={"owner": ALICE, "asset": "GBP", "decimals": 2},
        headers={"Idempotency-Key": "alice-gbp"},
    )
    gbp = r.json()["id"]
    env.http.post(
        f"/v1/accounts/{gbp}/deposits",
        json={"amount": 10_000, "reference": "gbp-seed"},
        headers={"Idempotency-Key": "gbp-seed"},
    )
    f = tmp_path / "gbp.xml"
    f.write_bytes(pain001("BATCH-GBP", [("E2E-GBP-1", "10.00", *CAROL)], ccy="GBP"))
    code, out = env.pay("import", str(f), "--json")
    assert code == 0 and json.loads(out)["payments"][0]["status"] == "authorized", out
    assert env.http.get(f"/v1/accounts/{gbp}").json()["held"] == 1_000
    code, out = env.pay("settle", "--out", str(tmp_path / "out"), "--json")
    assert code == 0, out
    (m,) = [x for x in json.loads(out)["messages"] if x["asset"] == "GBP"]
    assert m["status"] == "failed" and "custody refused" in (m["detail"] or ""), m
    p = env.by_e2e()["E2E-GBP-1"]
    assert p["status"] == "failed" and any("custody refused" in x for x in p["reasons"]), p
    acct = env.http.get(f"/v1/accounts/{gbp}").json()
    assert (acct["balance"], acct["held"]) == (10_000, 0)
    assert not (tmp_path / "out" / f"{m['id']}.xml").exists()
