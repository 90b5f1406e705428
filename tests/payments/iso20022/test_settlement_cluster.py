"""pacs.008 settlement files signed by a real cluster (coordinator + 3 signer-node
processes, one per module) with a 2-of-3 Ed25519 key as ``iso20022``: the nodes sign the
canonical SignedInfo they build from the document they decoded, so the file verifies as a
standard XML signature, with :func:`verify_settlement` and with the independent lxml C14N +
PyNaCl check; tampering is refused; a large settlement waits for two treasury approvals,
which the approvers give after ``custody approve`` showed it in plain words."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from custody import policy as pol
from custody.client import CustodyError
from custody.cluster import TREASURY
from custody.kinds import iso20022 as kind
from payments.iso20022 import SettlementMessage, build_settlement, verify_settlement
from tests.e2e.conftest import Live, current_governance, install_policy, running_cluster
from tests.payments.iso20022.conftest import CREATED, net
from tests.payments.iso20022.test_settlement import TAMPERS, independent_verify

LIMIT = 1_000_000  # minor units: 10 000.00 EUR signs at once, more waits for two approvals


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as lv:
        cur, _ = current_governance(lv)
        eur, iso = frozenset({"EUR"}), frozenset({"iso20022"})
        two = pol.Requirement("all", (pol.GroupQuorum(TREASURY, 2),))
        rules = (
            pol.Rule("eur-settlement", "allow", kinds=iso, assets=eur, max_amount=LIMIT),
            pol.Rule(
                "eur-settlement-large",
                "approve",
                kinds=iso,
                assets=eur,
                min_amount=LIMIT + 1,
                approvals=two,
            ),
        )
        ours = {r.rule_id for r in rules}  # the dev policy may carry the same two rules
        kept = tuple(r for r in cur.policy.rules if r.rule_id not in ours)
        install_policy(lv, replace(cur.policy, rules=(*kept, *rules)))
        yield lv


def _public_key(live: Live) -> bytes:
    return bytes.fromhex(live.key("ed25519").public_key or "")


def _sign(live: Live, msg: SettlementMessage, wait: bool = True) -> object:
    key = live.key("ed25519")
    return live.requester.sign(
        key.id, kind="iso20022", payload={"xml": msg.document}, wait=wait, timeout=60
    )


def test_a_cluster_signed_settlement_verifies_as_an_xml_signature(live: Live) -> None:
    msg = build_settlement(net("1500.25"), created=CREATED)
    r = _sign(live, msg)
    assert r.status == "signed", r  # type: ignore[attr-defined]
    intent = kind.decode({"xml": msg.document})
    # the message the nodes signed is the canonical SignedInfo over the document's digest
    assert bytes.fromhex(r.message) == kind.signed_info(intent.digest)  # type: ignore[attr-defined]
    xml = msg.signed(bytes.fromhex(r.signature), key_name=live.key("ed25519").id)  # type: ignore[attr-defined]
    report = verify_settlement(xml, _public_key(live))
    assert report.valid and report.schema_checked, report.failure
    independent_verify(xml, _public_key(live))
    info = etree.fromstring(xml).find(".//{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    assert info is not None
    assert etree.tostring(info, method="c14n", exclusive=True) == bytes.fromhex(r.message)  # type: ignore[attr-defined]
    for name in ("amount", "creditor account", "netted ids", "moved document", "second reference"):
        tamper, check = TAMPERS[name]
        bad = verify_settlement(tamper(xml), _public_key(live))
        assert not bad.valid and bad.failure is not None and bad.failure.name == check, name


def test_the_coordinator_cannot_name_another_message(live: Live) -> None:
    """A request whose ``message`` is anything but the SignedInfo the payload gives (here:
    the old form, the document's bare digest) is refused before any node signs."""
    msg = build_settlement(net("20.00", sid="SET-OLD-FORM"), created=CREATED)
    digest = kind.decode({"xml": msg.document}).digest
    key = live.key("ed25519")
    with pytest.raises(CustodyError) as err:
        live.requester.sign(
            key.id, digest.hex(), kind="iso20022", payload={"xml": msg.document}, timeout=30
        )
    assert err.value.status in (400, 422), err.value.problem
    assert "message" in str(err.value.problem)


def test_other_schemes_and_other_currencies_are_refused(live: Live) -> None:
    msg = build_settlement(net("10.00", sid="SET-BIP340"), created=CREATED)
    with pytest.raises(CustodyError) as err:
        live.requester.sign(live.key("bip340").id, kind="iso20022", payload={"xml": msg.document})
    assert err.value.status in (400, 422), err.value.problem
    gbp = build_settlement(net("10.00", ccy="GBP", sid="SET-GBP"), created=CREATED)
    with pytest.raises(CustodyError) as err:
        _sign(live, gbp)
    assert err.value.status == 403  # no rule allows GBP: denied by default


def _cli(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    files = live.doc["dev_governance"]
    return subprocess.run(  # noqa: S603 - our own argv
        [sys.executable, "-m", "custody.cli", *args, "--passphrase-file",
         files["approver_passphrase_file"], "--cluster", str(live.cluster.cluster_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_large_settlement_waits_for_two_approvals_shown_in_plain_words(live: Live) -> None:
    ids = ("E2E-INV-1001", "E2E-INV-1002", "E2E-INV-2001")
    msg = build_settlement(net("25000.00", ids=ids, sid="SET-LARGE"), created=CREATED)
    sr = _sign(live, msg, wait=False)
    assert sr.status == "pending_approval", sr  # type: ignore[attr-defined]
    rid = sr.id  # type: ignore[attr-defined]
    key_files = sorted(live.doc["dev_governance"]["approvers"])
    one = _cli(live, "approve", rid, "--key-file", key_files[0], "--yes")
    assert one.returncode == 0, one.stdout + one.stderr
    for shown in (
        "settle 25000.00 EUR (pacs.008.001.08, one transfer)",
        "Banque Bob SA, IBAN FR1420041010050500013M02606 at BNPAFRPP",
        "E2E-INV-1001, E2E-INV-1002, E2E-INV-2001",
        msg.uetr,
        "eur-settlement-large",
    ):
        assert shown in one.stdout, (shown, one.stdout)
    two = _cli(live, "approve", rid, "--key-file", key_files[1], "--yes")
    assert two.returncode == 0, two.stdout + two.stderr
    for _ in range(300):
        done = live.auditor.get_sign_request(rid)
        if done.status not in ("signing", "pending_approval"):
            break
        time.sleep(0.1)
    assert done.status == "signed", done
    xml = msg.signed(bytes.fromhex(done.signature or ""))
    assert verify_settlement(xml, _public_key(live)).valid
    independent_verify(xml, _public_key(live))
    value = etree.fromstring(xml).findtext(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    assert base64.b64decode(value or "") == bytes.fromhex(done.signature or "")


def test_files_land_where_the_service_writes_them(live: Live, tmp_path: Path) -> None:
    """A signed file written to disk and read back (as ``custody pay verify-settlement FILE``
    would) still verifies; the same bytes with the receiver's BIC changed do not."""
    msg = build_settlement(net("42.00", sid="SET-FILE"), created=CREATED)
    r = _sign(live, msg)
    path = tmp_path / "SET-FILE.xml"
    path.write_bytes(msg.signed(bytes.fromhex(r.signature)))  # type: ignore[attr-defined]
    assert verify_settlement(path.read_bytes(), _public_key(live)).valid
    to = b"</BICFI></FinInstnId></FIId></To>"
    forged = path.read_bytes().replace(b"<BICFI>BNPAFRPP" + to, b"<BICFI>NWBKGB2L" + to)
    report = verify_settlement(forged, _public_key(live))
    assert not report.valid and report.failure is not None and report.failure.name == "header"
