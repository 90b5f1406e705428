"""The treasury console end to end in a real browser (issue 15, slice 4): Debian's headless
``chromium`` driven by Playwright (``executable_path``), each approver with the DevTools
virtual authenticator (CTAP2, internal, resident keys, user verification), against a real
cluster (coordinator + three signer-node processes, tests/e2e/conftest.py).

Two approvers register passkeys in the console (pending governance), the officers sign a
governance version that puts both in the treasury group (format 3), both sign in; one sees
a pending Ethereum withdrawal decoded and approves it with a fresh assertion: every node
verifies that assertion itself and the transaction is signed (eth-account recovers the
key's address from it), then sent to an in-process chain (eth-tester on py-evm,
``payments.evm.EthTesterChain``, the key's address funded from its genesis account) and
mined: receipt status 1, the destination's balance up by the amount. The second approver
rejects another request. A decision posted with
the session cookie but no assertion is refused. axe-core runs in the same browser on every
page: no serious or critical violation. No page triggers a CSP violation. Screenshots of the
queue and the approval page (docs/, with ``CUSTODY_CONSOLE_SCREENSHOTS=1``).

Skipped, with the reason, only when chromium is missing and ``CUSTODY_REQUIRE_BROWSER`` is
unset (.ci/run installs chromium and sets it)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_account import Account

from custody import approvals as ap
from custody import governance as gov
from custody import passkeys as pk
from custody import policy as pol
from custody import receipts
from custody.client import CustodyClient
from custody.cluster import DEMO_ETH_DESTINATIONS, ETH_LIMIT, TREASURY
from payments.evm import EthTesterChain
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).parent
DOCS = HERE.parents[1] / "docs"
AXE = HERE / "axe-4.14.1.min.js"
ECDSA = "ecdsa-secp256k1"
DEST = DEMO_ETH_DESTINATIONS[0]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
    if os.environ.get("CUSTODY_REQUIRE_BROWSER"):
        raise RuntimeError(f"CUSTODY_REQUIRE_BROWSER is set but {CHROMIUM} is missing")
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install chromium); CUSTODY_REQUIRE_BROWSER unset",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """This module's own cluster (it installs governance)."""
    with running_cluster(tmp_path_factory.mktemp("console-cluster")) as lv:
        yield lv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Approver:
    """One approver's browser context with its own virtual authenticator."""

    def __init__(self, browser: Browser, base: str, who: str, token: str) -> None:
        self.who, self.token, self.base = who, token, base
        self.context: BrowserContext = browser.new_context(viewport={"width": 1100, "height": 900})
        self.page: Page = self.context.new_page()
        self.csp_violations: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.csp_violations.append(m.text) if "Content Security Policy" in m.text else None
            ),
        )
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable")
        self.authenticator = self.cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )["authenticatorId"]

    def go(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def status(self, contains: str) -> str:
        loc = self.page.locator("#status")
        loc.filter(has_text=contains).wait_for(timeout=30_000)
        return str(loc.text_content())

    def register(self) -> pk.PasskeyCredential:
        p = self.go("/console/register")
        p.get_by_label("Approver API token").fill(self.token)
        p.get_by_role("button", name="Create a passkey").click()
        self.status("pending governance")
        entry = json.loads(str(p.locator("#policy-entry").text_content()))
        assert entry["id"] == self.who
        k = entry["passkey"]
        pad = "=" * (-len(k["credential_id"]) % 4)
        return pk.PasskeyCredential(
            base64.urlsafe_b64decode(k["credential_id"] + pad),
            bytes.fromhex(k["public_key"]),
            k["rp_id"],
            tuple(k["origins"]),
        )

    def sign_in(self) -> None:
        p = self.go("/console")
        p.get_by_role("button", name="Sign in with a passkey").click()
        p.wait_for_url("**/console/queue")

    def tab_to(self, text: str, limit: int = 30) -> None:
        """Move the focus with Tab alone until it is on the control labelled ``text``."""
        for _ in range(limit):
            self.page.keyboard.press("Tab")
            if self.page.evaluate("document.activeElement.textContent.trim()") == text:
                return
        raise AssertionError(f"{text!r} is not reachable with Tab")

    def axe(self) -> list[dict[str, Any]]:
        """axe-core in this page (run through DevTools, outside the page's CSP): the
        serious and critical violations."""
        self.page.evaluate(AXE.read_text())
        result = self.page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]

    def close(self) -> None:
        self.context.close()


TIP = 10**9  # wei per gas to the block producer
FUNDING = 10 * 10**18


def unsigned_tx(chain: EthTesterChain, value: int, nonce: int) -> tuple[str, int]:
    """An unsigned EIP-1559 ether transfer to DEST for ``chain`` (its own chain id, a max fee
    over its base fee), and that max fee per gas."""
    max_fee = 2 * chain.latest_base_fee() + TIP
    fields = [chain.chain_id(), nonce, TIP, max_fee, 21_000, bytes.fromhex(DEST[2:]), value]
    return "0x02" + rlp.encode([*fields, b"", []]).hex(), max_fee


def key_file_approval(live: Live, rid: str, approver_client: CustodyClient) -> None:
    """dev-approver-1's key-file approval (as ``custody approve`` makes it)."""
    files = live.doc["dev_governance"]
    path = sorted(files["approvers"])[0]
    passphrase = Path(files["approver_passphrase_file"]).read_bytes()
    approver, signer = gov.open_approver_key(Path(path).read_bytes(), passphrase)
    sr = live.auditor.get_sign_request(rid)
    a = sr.approval
    assert a is not None
    body = {"id": sr.id, "key_id": sr.key_id, "kind": sr.kind, "payload": sr.payload}
    _, req = ap.request_intent(ECDSA, body)
    st = ap.ApprovalStatement(
        req.intent_digest,
        rid,
        a.policy_version,
        bytes.fromhex(a.governance_digest),
        int(time.time()) + 600,
        approver.approver_id,
        "approve",
        a.initiator,
    )
    wire = base64.b64encode(ap.sign_approval(signer, st).encode()).decode()
    approver_client.approve(rid, wire)


def wait_status(live: Live, rid: str, want: str) -> Any:
    for _ in range(600):
        sr = live.auditor.get_sign_request(rid)
        if sr.status == want:
            return sr
        assert sr.status in ("pending_approval", "signing"), sr
        time.sleep(0.1)
    raise AssertionError(f"{rid} is still {sr.status}")


def test_register_sign_in_approve_and_reject_with_passkeys_in_chromium(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    # docs/console-*.png are refreshed with CUSTODY_CONSOLE_SCREENSHOTS=1 (else a scratch dir,
    # so a test run leaves the checkout as it was)
    shots = DOCS if os.environ.get("CUSTODY_CONSOLE_SCREENSHOTS") else tmp_path
    port = live.doc["api_url"].rsplit(":", 1)[1].strip("/")
    base = f"http://localhost:{port}"  # a secure context WebAuthn accepts (RP id localhost)
    creds = {
        who: live.admin.create_credential("approver", principal=who).token
        for who in ("alice", "bob")
    }
    alice = Approver(browser, base, "alice", creds["alice"])
    bob = Approver(browser, base, "bob", creds["bob"])
    approver_api = CustodyClient(live.doc["api_url"], live.doc["credentials"]["approver"])
    try:
        # -- register: pending governance until the officers sign a version
        cred_a, cred_b = alice.register(), bob.register()
        assert cred_a.rp_id == "localhost" and cred_a.origins == (base,)
        alice.sign_in()
        assert alice.page.locator("#pending-governance").is_visible()
        cur, _ = current_governance(live)
        groups = tuple(
            pol.ApproverGroup(
                g.group_id,
                (
                    *g.approvers,
                    pol.Approver("alice", b"", cred_a),
                    pol.Approver("bob", b"", cred_b),
                ),
            )
            if g.group_id == TREASURY
            else g
            for g in cur.policy.approver_groups
        )
        p = cur.policy
        g = install_policy(live, pol.Policy(p.rules, p.allowlists, p.wallets, groups))
        assert g.format == gov.FORMAT_WITH_PASSKEYS

        # -- the in-process chain, the key's address funded on it from a genesis account
        key = live.key(ECDSA)
        address = key.addresses["ethereum"]
        chain = EthTesterChain()
        funded = chain.get_transaction_receipt(chain.fund(address, FUNDING))
        assert funded is not None and funded.status == 1
        assert chain.get_balance(address) == FUNDING
        assert chain.get_transaction_count(address) == 0

        # -- two pending withdrawals (2.5 ETH and 3 ETH: over the limit, 2 of treasury)
        amount = 5 * ETH_LIMIT // 2
        tx_big, max_fee = unsigned_tx(chain, amount, 0)
        tx_other, _ = unsigned_tx(chain, 3 * ETH_LIMIT, 1)
        # the first as the payment core sends it: with its authorization's risk report
        report = {"score": 15, "flags": [f"first payment to destination {DEST}"]}
        big = live.requester.sign(
            key.id, kind="evm-tx", payload={"tx": tx_big}, wait=False, risk=report
        )
        other = live.requester.sign(key.id, kind="evm-tx", payload={"tx": tx_other}, wait=False)
        assert big.status == other.status == "pending_approval"
        key_file_approval(live, big.id, approver_api)  # one of two from a key file

        # -- alice: the queue, the request decoded, approve with a fresh assertion
        alice.go("/console/queue")
        row = alice.page.locator("tr", has_text=big.id)
        row.wait_for()
        assert "2.5 ETH" in str(row.text_content())
        assert "score 15/100 · 1 flag" in str(row.text_content())
        assert not alice.page.locator("#pending-governance").count()
        violations = {"queue": alice.axe()}
        alice.page.screenshot(path=str(shots / "console-queue.png"), full_page=True)
        alice.page.get_by_role("link", name=big.id).click()
        page = alice.page
        chain_id = chain.chain_id()
        assert page.locator("#chain").text_content() == f"EVM chain (chain id {chain_id})"
        assert page.locator("#amount").text_content() == "2.5 ETH"
        assert page.locator("#asset").text_content() == "ETH"
        dest = str(page.locator(".dest").text_content())
        assert DEST in dest and "demo-destinations" in dest
        # its entry has no time lock: its age is from the governance version that added it
        # (the cluster's genesis, installed minutes ago), and it is new
        assert re.search(r"added (just now|[0-9]+ (min|hours?) ago)", dest), dest
        assert "time lock" not in dest and "new destination" in dest
        fee = str(page.locator("#fee").text_content())
        assert fee == f"at most {(Decimal(max_fee * 21_000) / 10**18).normalize():f} ETH", fee
        assert "eth-over-limit" in str(page.locator("#rule").text_content())
        assert "dev-approver-1: approve" in str(page.locator("#approvals").text_content())
        assert "Risk flags reported by the payment core" in str(
            page.locator("#risk").text_content()
        )
        assert page.locator("#risk-flags li").all_text_contents() == [f"⚠ {report['flags'][0]}"]
        violations["request"] = alice.axe()
        page.screenshot(path=str(shots / "console-approval.png"), full_page=True)
        for png in ("console-queue.png", "console-approval.png"):
            assert (shots / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # a session cookie and the CSRF token, but no assertion: refused
        no_assertion = page.evaluate(
            """async (id) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const r = await fetch('/console/requests/' + id + '/decide', {method: 'POST',
                  headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                  body: JSON.stringify({decision: 'approve'})});
                return [r.status, r.headers.get('content-type'), (await r.json()).type];
            }""",
            big.id,
        )
        assert no_assertion == [
            400,
            "application/problem+json",
            "urn:tpwc:problem:console-assertion-missing",
        ]
        page.get_by_role("button", name="Approve with passkey").click()
        alice.status("approved")
        signed = wait_status(live, big.id, "signed")
        assert signed.result is not None
        assert Account.recover_transaction(signed.result.signed_tx) == address
        approvals = {a.approver_id for a in (signed.approval.approvals if signed.approval else [])}
        assert {"alice", "dev-approver-1"} <= approvals
        receipt = live.auditor.http.get(f"/v1/sign-requests/{big.id}/receipt").json()
        body = receipts.decode_body(bytes.fromhex(receipt["body"]))
        # the releasing nodes attest that alice's passkey approval counted, over its statement
        assert {a for a, _ in body.approvals} == {"alice", "dev-approver-1"}

        # -- the signed transaction the approval produced, sent to the chain and mined
        raw = bytes.fromhex(signed.result.signed_tx.removeprefix("0x"))
        dest_before = chain.get_balance(DEST)
        tx_hash = chain.send_raw_transaction(raw)
        mined = chain.get_transaction_receipt(tx_hash)
        assert mined is not None and mined.status == 1, mined
        assert (mined.sender, mined.to) == (address, DEST)
        assert chain.get_balance(DEST) - dest_before == amount
        assert chain.get_balance(address) == FUNDING - amount - mined.fee
        assert chain.get_transaction_count(address) == 1
        # the request page shows the transaction's hash, the one the chain mined
        page.reload()
        assert page.locator("#req-status").text_content() == "signed"
        assert page.locator("#tx-hash").text_content() == "0x" + tx_hash.hex()

        # -- bob rejects the other one, with the keyboard only
        bob.go("/console")
        bob.tab_to("Sign in with a passkey")
        bob.page.keyboard.press("Enter")
        bob.page.wait_for_url("**/console/queue")
        bob.go(f"/console/requests/{other.id}")
        bob.tab_to("Reject with passkey")
        bob.page.keyboard.press("Enter")
        bob.status("rejected")
        assert wait_status(live, other.id, "rejected").status == "rejected"

        # -- every page: axe, no CSP violation, keyboard reachable
        for path in (
            "/console/history",
            "/console/keys",
            "/console/policies",
            "/console/audit",
            "/console/webhooks",
        ):
            bob.go(path)
            violations[path] = bob.axe()
        bob.go("/console")
        bob.context.clear_cookies()
        bob.go("/console")
        violations["sign-in"] = bob.axe()
        bob.go("/console/register")
        violations["register"] = bob.axe()
        bob.page.keyboard.press("Tab")  # the skip link first, then the form by keyboard
        assert bob.page.evaluate("document.activeElement.className") == "skip"
        focus = []
        for _ in range(2):
            bob.page.keyboard.press("Tab")
            focus.append(
                bob.page.evaluate("document.activeElement.id || document.activeElement.textContent")
            )
        assert focus == ["token", "Create a passkey"], focus
        assert {k: v for k, v in violations.items() if v} == {}
        assert alice.csp_violations == [] and bob.csp_violations == []
    finally:
        alice.close()
        bob.close()
        approver_api.close()
