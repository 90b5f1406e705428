"""``custody demo``, part three: payments flowing through the payment service
(``python -m payments``, started beside the cluster as ``custody up --with-payments`` does),
driven over its HTTP API only, as any client would.

Steps, each printed as a line or a small table as it happens:

1. accounts opened and funded (EUR customers named by their IBAN, an ETH and a BTC
   treasury account);
2. a pain.001.001.09 batch (:func:`demo_batch`, built here) imported: transfers to two
   other banks (``iso20022`` rail), one to a customer of this bank (``book`` rail), one to a
   bank without a settlement arrangement (declined, with its reason);
3. an ETH payment to a sanctioned address (declined by sanctions screening, its reason
   shown) and one above the demo policy's 1 ETH limit: it waits in ``awaiting_approval``
   until two dev approvers of the ``treasury`` group approve (each decoding the sign
   request locally, as ``custody approve`` does); then it is signed by the 2-of-3 ECDSA
   key, mined on the in-process Ethereum chain (tx hash, block; status 1, or the payment
   would have failed);
4. a Bitcoin payment signed by the 2-of-3 BIP-340 key, accepted by the regtest set, which
   runs every input through Bitcoin Core's script rules (libbitcoinkernel), and confirmed;
5. the settlement window closed: the EUR transfers to other banks netted per bank into
   signed pacs.008 files, each checked by :func:`custody.xmldsig.verify_settlement` (what
   ``custody pay verify-settlement`` runs: XML signature, PyNaCl, the XSD);
6. the counterparties' confirmations booked, then reconciliation: zero breaks.

Any step that does not reach its expected state raises :class:`DemoStepFailed` naming the
step and why; ``custody demo`` prints it and exits non-zero.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_utils.crypto import keccak
from rich.console import Console
from rich.table import Table

from custody import xmldsig
from custody.client import CustodyClient
from custody.cluster import BTC_LIMIT, DEMO_BTC_DESTINATIONS, DEMO_ETH_DESTINATIONS, ETH_LIMIT
from custody.pay_cli import packaged_schema

OUR_BIC = "DEUTDEFFXXX"  # the payment service's PAYMENTS_BANK_BIC default
ALICE = "DE62370400440532013001"  # EUR customers of this bank: the account owner is the IBAN
DAVE = "DE35370400440532013002"
BOB = ("BNPAFRPP", "FR7630006000011234567890189")  # banks in payments/lists/counterparties.json
CAROL = ("INGBNL2A", "NL91ABNA0417164300")
ZED = ("NWBKGB2L", "GB29NWBK60161331926819")  # no settlement arrangement with this bank
# a fixture entry of payments/lists/sanctions/sdn.csv (not a real designation)
SANCTIONED_ETH = "0x1111111111111111111111111111111111111111"
# (end-to-end id, EUR, creditor BIC, creditor IBAN); each run adds its tag to the ids
BATCH = (
    ("DEMO-BOB-1", "1250.00", *BOB),
    ("DEMO-BOB-2", "500.25", *BOB),
    ("DEMO-CAROL-1", "300.00", *CAROL),
    ("DEMO-DAVE-1", "100.00", OUR_BIC, DAVE),
    ("DEMO-ZED-1", "20.00", *ZED),
)
GWEI = 10**9  # the payment service ledgers ETH in gwei (9 decimals)
TIMEOUT = 120.0
TERMINAL = {"declined", "failed", "cancelled"}


class DemoStepFailed(RuntimeError):
    """A step of the payments demo did not reach its expected state."""


def run_tag() -> str:
    """A tag for one run (time and 4 random hex digits): its end-to-end ids, idempotency
    keys and deposit references are new, so the demo runs again on a running cluster."""
    return time.strftime("%H%M%S", time.gmtime()) + secrets.token_hex(2)


def batch(tag: str) -> list[tuple[str, str, str, str]]:
    """:data:`BATCH` with this run's end-to-end ids (at most 35 characters)."""
    return [(f"{e2e}-{tag}", amt, bic, iban) for e2e, amt, bic, iban in BATCH]


def demo_batch(tag: str) -> bytes:
    """The demo's pain.001.001.09 file: :func:`batch` from ALICE's account at this bank."""
    txs = batch(tag)
    msg_id = f"DEMO-BATCH-{tag}"
    total = sum(Decimal(t[1]) for t in txs)
    body = "".join(
        f"<CdtTrfTxInf><PmtId><EndToEndId>{e2e}</EndToEndId></PmtId>"
        f'<Amt><InstdAmt Ccy="EUR">{amt}</InstdAmt></Amt>'
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
        f"<DbtrAcct><Id><IBAN>{ALICE}</IBAN></Id></DbtrAcct>"
        f"<DbtrAgt><FinInstnId><BICFI>{OUR_BIC}</BICFI></FinInstnId></DbtrAgt>\n"
        f"{body}</PmtInf></CstmrCdtTrfInitn></Document>\n"
    ).encode()


class PaymentsApi:
    """The payment service over HTTP (bearer token from cluster.json's ``payments``)."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def close(self) -> None:
        self.http.close()

    def call(
        self, step: str, method: str, path: str, want: tuple[int, ...] = (200, 201), **kw: Any
    ) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code not in want:
            try:
                doc = r.json()
                why = f"{doc.get('title', '')}: {doc.get('detail', r.text)}"
                if doc.get("errors"):
                    why += " " + "; ".join(str(e.get("field")) for e in doc["errors"])
            except ValueError:
                why = r.text
            raise DemoStepFailed(f"{step}: {method} {path} answered {r.status_code} {why}")
        return r.json() if "json" in r.headers.get("content-type", "") else r.content

    def post(self, step: str, path: str, body: Any, key: str | None = None) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        return self.call(step, "POST", path, json=body, headers=headers)

    def account(self, owner: str, asset: str, decimals: int, funds: int, tag: str) -> str:
        step = f"opening the {asset} account of {owner}"
        a = self.post(
            step,
            "/v1/accounts",
            {"owner": owner, "asset": asset, "decimals": decimals},
            f"demo-acct-{owner}-{asset}",
        )
        self.post(
            step,
            f"/v1/accounts/{a['id']}/deposits",
            {"amount": funds, "reference": f"demo-{tag}-{owner}-{asset}"},
            f"demo-dep-{tag}-{owner}-{asset}",
        )
        return str(a["id"])

    def payment(self, pid: str) -> dict[str, Any]:
        return dict(self.call("reading a payment", "GET", f"/v1/payments/{pid}"))

    def wait(self, pid: str, want: set[str], step: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            p = self.payment(pid)
            if p["status"] in want:
                return p
            if p["status"] in TERMINAL:
                raise DemoStepFailed(
                    f"{step}: payment {pid} is {p['status']}: {'; '.join(p['reasons'])}"
                )
            if time.monotonic() > deadline:
                raise DemoStepFailed(
                    f"{step}: payment {pid} still {p['status']} after {TIMEOUT:.0f} s "
                    f"(wanted {' or '.join(sorted(want))})"
                )
            time.sleep(0.2)

    def confirmed_event(self, pid: str) -> dict[str, Any]:
        events = self.call("reading a payment's events", "GET", f"/v1/payments/{pid}/events")
        for e in events:
            if e["type"] == "PaymentConfirmed":
                return dict(e["data"])
        raise DemoStepFailed(f"payment {pid} is confirmed but has no PaymentConfirmed event")


def payments_flow(
    console: Console,
    doc: dict[str, Any],
    c_auditor: CustodyClient,
    approve: Callable[[str, str], list[str]],
    work_dir: Path,
    update: Callable[[str], None],
    settlement_key_id: str,
) -> bool:
    """Run the steps of the module docstring against ``doc["payments"]``; prints as it
    goes; True when every check passed (a step that cannot go on raises
    :class:`DemoStepFailed`). ``approve(sign_request_id, scheme)`` approves as two dev
    approvers and returns their ids."""
    api = PaymentsApi(doc["payments"]["url"], doc["payments"]["token"])
    try:
        return _flow(console, api, c_auditor, approve, work_dir, update, settlement_key_id)
    finally:
        api.close()


def _flow(
    console: Console,
    api: PaymentsApi,
    c_auditor: CustodyClient,
    approve: Callable[[str, str], list[str]],
    work_dir: Path,
    update: Callable[[str], None],
    settlement_key_id: str,
) -> bool:
    ok = True
    tag = run_tag()
    console.rule("[bold]Payments: the payment service over its HTTP API[/bold]")
    # 1. accounts
    update("payments: opening and funding accounts")
    alice = api.account(ALICE, "EUR", 2, 5_000_000, tag)  # 50 000.00 EUR
    dave = api.account(DAVE, "EUR", 2, 1, tag)
    eth_acct = api.account("demo-eth-treasury", "ETH", 9, 5 * GWEI, tag)  # 5 ETH
    btc_acct = api.account("demo-btc-treasury", "BTC", 8, 50_000_000, tag)  # 0.5 BTC
    console.print(
        f"run {tag}: accounts funded: ALICE ({ALICE}) +50 000.00 EUR, DAVE ({DAVE}), "
        "ETH treasury +5 ETH, BTC treasury +0.5 BTC",
        soft_wrap=True,
    )
    # 2. the pain.001 batch
    update("payments: importing a pain.001 batch")
    batch_file = work_dir / f"pain001-{tag}.xml"
    batch_file.write_bytes(demo_batch(tag))
    txs = batch(tag)
    e2e = {t[0]: f"{t[0]}-{tag}" for t in BATCH}
    imported = api.call(
        "importing the pain.001 batch",
        "POST",
        "/v1/payments/imports",
        content=batch_file.read_bytes(),
        headers={"content-type": "application/xml"},
    )["payments"]
    t = Table(title=f"pain.001.001.09 batch imported ({len(imported)} transactions, XSD-valid)")
    t.caption = str(batch_file)
    t.add_column("end-to-end id", no_wrap=True)
    t.add_column("EUR", justify="right", no_wrap=True)
    t.add_column("creditor", overflow="fold")
    t.add_column("rail", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("why", overflow="fold")
    by_e2e = {p["end_to_end_id"]: p for p in imported}
    for p, (_, _, bic, iban) in zip(imported, txs, strict=False):
        mark = "green" if p["status"] == "authorized" else "red"
        t.add_row(
            p["end_to_end_id"].removesuffix(f"-{tag}"),
            f"{Decimal(p['amount']).scaleb(-2):.2f}",
            f"{bic} {iban}",
            p["rail"],
            f"[{mark}]{p['status']}[/{mark}]",
            f"risk score {p['risk_score']}"
            if p["status"] == "authorized"
            else "; ".join(r for r in p["reasons"] if not r.startswith("first payment")),
        )
    console.print(t)
    if [p["end_to_end_id"] for p in imported] != [x[0] for x in txs]:
        raise DemoStepFailed(f"the batch import answered {sorted(by_e2e)}, not {txs}")
    if by_e2e[e2e["DEMO-ZED-1"]]["status"] != "declined" or any(
        by_e2e[e2e[x]]["status"] != "authorized"
        for x in ("DEMO-BOB-1", "DEMO-BOB-2", "DEMO-CAROL-1", "DEMO-DAVE-1")
    ):
        raise DemoStepFailed(
            "the batch's payments are not authorized/declined as expected: "
            + ", ".join(f"{k} {p['status']}" for k, p in by_e2e.items())
        )
    again = api.call(
        "importing the same batch again",
        "POST",
        "/v1/payments/imports",
        content=batch_file.read_bytes(),
        headers={"content-type": "application/xml"},
    )["payments"]
    if [p["id"] for p in again] != [p["id"] for p in imported]:
        raise DemoStepFailed("the same batch imported again made new payments")
    console.print(f"the same file imported again: the same {len(again)} payments, nothing new")
    # 3. ETH: a sanctioned destination, then one above the limit waiting for approvals
    update("payments: an ETH payment to a sanctioned address")
    bad = api.post(
        "paying a sanctioned address",
        "/v1/payments",
        {"account_id": eth_acct, "amount": GWEI // 10, "destination": SANCTIONED_ETH,
         "rail": "ethereum"},
        f"demo-eth-sanctioned-{tag}",
    )  # fmt: skip
    if bad["status"] != "declined":
        raise DemoStepFailed(f"the payment to {SANCTIONED_ETH} was {bad['status']}, not declined")
    console.print(
        f"0.1 ETH to {SANCTIONED_ETH}: [red]declined[/red]: {'; '.join(bad['reasons'])}",
        soft_wrap=True,
    )
    big = 3 * ETH_LIMIT // 2 // GWEI  # 1.5 ETH in gwei, above the demo policy's 1 ETH
    update("payments: 1.5 ETH above the limit, waiting for approvals")
    p = api.post(
        "paying 1.5 ETH",
        "/v1/payments",
        {"account_id": eth_acct, "amount": big, "destination": DEMO_ETH_DESTINATIONS[0],
         "rail": "ethereum"},
        f"demo-eth-big-{tag}",
    )  # fmt: skip
    if p["status"] != "authorized":
        raise DemoStepFailed(f"1.5 ETH payment {p['status']}: {'; '.join(p['reasons'])}")
    p = api.wait(p["id"], {"awaiting_approval"}, "1.5 ETH above the limit")
    console.print(
        f"1.5 ETH to {DEMO_ETH_DESTINATIONS[0]}: authorized (risk score {p['risk_score']}), "
        f"then {p['status']}: custody sign request {p['sign_request_id']} needs 2 of treasury",
        soft_wrap=True,
    )
    update("payments: two dev approvers approve the 1.5 ETH transfer")
    by = approve(str(p["sign_request_id"]), "ecdsa-secp256k1")
    console.print(f"approved by {', '.join(by)}")
    update("payments: 1.5 ETH signed, broadcast, mining")
    p = api.wait(p["id"], {"confirmed"}, "1.5 ETH after the approvals")
    facts = api.confirmed_event(p["id"])
    # eth-account (not our code) recovers the sender from the transaction custody signed,
    # and its hash is the one the chain mined
    sr = c_auditor.get_sign_request(str(p["sign_request_id"]))
    key = c_auditor.get_key(sr.key_id)
    signed_tx = getattr(sr.result, "signed_tx", None)
    if sr.status != "signed" or not signed_tx:
        raise DemoStepFailed(f"1.5 ETH: custody sign request {sr.id} is {sr.status}")
    raw = bytes.fromhex(signed_tx.removeprefix("0x"))
    sender = Account.recover_transaction(raw)
    if sender != key.addresses.get("ethereum") or "0x" + keccak(raw).hex() != p["rail_ref"]:
        raise DemoStepFailed(
            f"1.5 ETH: the signed transaction recovers {sender} / hashes to "
            f"0x{keccak(raw).hex()}, not the key's address / the mined {p['rail_ref']}"
        )
    console.print(
        f"1.5 ETH: [green]signed[/green] by nodes {', '.join(map(str, sr.signers or []))} "
        f"(eth-account recovers {sender}), mined on the in-process Ethereum chain: tx "
        f"{p['rail_ref']}, block {facts.get('block_number')}, receipt status 1, "
        f"{facts.get('confirmations')} confirmation(s), fee {p['fee']} gwei",
        soft_wrap=True,
    )
    # 4. Bitcoin
    update("payments: a Bitcoin payment on the regtest set")
    sats = BTC_LIMIT // 10  # 0.01 BTC, under the demo policy's limit
    b = api.post(
        "paying 0.01 BTC",
        "/v1/payments",
        {"account_id": btc_acct, "amount": sats, "destination": DEMO_BTC_DESTINATIONS[2],
         "rail": "bitcoin"},
        f"demo-btc-{tag}",
    )  # fmt: skip
    if b["status"] != "authorized":
        raise DemoStepFailed(f"0.01 BTC payment {b['status']}: {'; '.join(b['reasons'])}")
    b = api.wait(b["id"], {"confirmed"}, "0.01 BTC payment")
    bfacts = api.confirmed_event(b["id"])
    console.print(
        f"0.01 BTC to {DEMO_BTC_DESTINATIONS[2]}: [green]signed[/green] (BIP-340 2-of-3, "
        f"PSBT), accepted by Bitcoin Core's script rules (libbitcoinkernel): txid "
        f"{b['rail_ref']}, block {bfacts.get('height')}, "
        f"{bfacts.get('confirmations')} confirmation(s), fee {b['fee']} sat",
        soft_wrap=True,
    )
    # 5. settlement: the book transfer first confirmed, then the window closed
    update("payments: the book transfer to DAVE")
    api.wait(by_e2e[e2e["DEMO-DAVE-1"]]["id"], {"confirmed"}, "book transfer to DAVE")
    update("payments: closing the settlement window (pacs.008, signed through custody)")
    settled = api.call("closing the settlement window", "POST", "/v1/settlements")
    msgs = settled["messages"]
    if not msgs or any(m["status"] != "sent" for m in msgs):
        raise DemoStepFailed(
            "settlement: pacs.008 messages "
            + (", ".join(f"{m['counterparty']} {m['status']} {m['detail'] or ''}" for m in msgs)
               or "none")
        )  # fmt: skip
    skey = c_auditor.get_key(settlement_key_id)
    pk = bytes.fromhex(skey.public_key or "")
    t = Table(title="Settlement: EUR transfers netted per bank into signed pacs.008.001.08")
    for col in ("bank", "payments", "net EUR", "UETR", "verify-settlement"):
        t.add_column(col, overflow="fold")
    for m in msgs:
        data = api.call("fetching a pacs.008 file", "GET", f"/v1/settlements/{m['id']}/file")
        path = work_dir / f"{m['id']}.xml"
        path.write_bytes(data)
        rep = xmldsig.verify_settlement(data, pk, schema=packaged_schema())
        good = rep.valid and rep.schema_checked
        ok = ok and good
        f = rep.failure
        t.add_row(
            m["counterparty"],
            str(m["payment_count"]),
            f"{Decimal(m['net_amount']).scaleb(-2):.2f}",
            m["uetr"],
            "[green]valid[/green] (signature, XSD)"
            if good
            else f"[red]INVALID[/red] {f.name if f else ''} {f.detail if f else ''}",
        )
    console.print(t)
    console.print(f"pacs.008 files in {work_dir} (custody pay verify-settlement FILE --key-id "
                  f"{skey.id})", soft_wrap=True)  # fmt: skip
    if {m["counterparty"] for m in msgs} != {"BNPAFRPPXXX", "INGBNL2AXXX"}:
        raise DemoStepFailed(f"settlement: pacs.008 for {[m['counterparty'] for m in msgs]}")
    # 6. confirmations, reconciliation
    update("payments: booking the counterparties' confirmations, reconciling")
    items = api.call("listing settlements", "GET", "/v1/settlements")["items"]
    for s in items:
        if s["confirmed_amount"] is None:
            api.post(
                "confirming a settlement",
                f"/v1/settlements/{s['id']}/confirmations",
                {"amount": s["net_amount"], "reference": f"demo-statement-{s['id']}"},
            )
    rec = api.call("reconciling", "POST", "/v1/reconciliations")
    breaks = rec["breaks"]
    if breaks:
        t = Table(title="Reconciliation breaks")
        for col in ("kind", "source", "payment", "detail"):
            t.add_column(col, overflow="fold")
        for br in breaks:
            t.add_row(br["kind"], br["source"], br["payment_id"] or "-", br["detail"])
        console.print(t)
        raise DemoStepFailed(f"reconciliation {rec['id']}: {len(breaks)} break(s)")
    check = api.call("checking the ledger", "GET", "/v1/ledger/check")
    sums = check["sum_per_asset"]
    balanced = all(v == 0 for v in sums.values()) and not check["replay_differences"]
    ok = ok and balanced
    alice_now = api.call("reading ALICE", "GET", f"/v1/accounts/{alice}")
    dave_now = api.call("reading DAVE", "GET", f"/v1/accounts/{dave}")
    console.print(
        f"reconciliation {rec['id']}: {rec['matched']} matched, [green]0 breaks[/green], "
        f"{len(rec['reconciled'])} payments reconciled; ledger sums per asset "
        f"{sums} ({'balanced' if balanced else 'NOT BALANCED'}), replay agrees: "
        f"{not check['replay_differences']}; balances: ALICE "
        f"{Decimal(alice_now['balance']).scaleb(-2):.2f} EUR, DAVE "
        f"{Decimal(dave_now['balance']).scaleb(-2):.2f} EUR",
        soft_wrap=True,
    )
    return ok
