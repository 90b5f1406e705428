"""The ``restore`` kind of a ceremony authorization (custody.governance): it names exactly
the one restored node as its committee and keeps the key's threshold; every other kind
still needs a committee of at least its threshold."""

from __future__ import annotations

import pytest

from custody import governance as gov
from tests.custody.test_ceremony_authorization import NOW, body, governance, officers, signed


def test_a_restore_names_exactly_the_restored_node() -> None:
    keys = officers()
    cur = governance(keys)
    ok = body(kind="restore", committee=("node-3",))
    a = gov.verify_ceremony_authorization(signed(keys, ok), cur, NOW)
    assert a.kind == "restore" and a.committee == ("node-3",) and a.threshold == 2
    with pytest.raises(gov.CeremonyAuthError, match="exactly the restored node") as e:
        body(kind="restore", committee=("node-2", "node-3")).encode()
    assert e.value.kind is gov.CeremonyAuthErrorKind.MALFORMED
    with pytest.raises(gov.CeremonyAuthError, match="keeps the threshold"):
        body(kind="restore", committee=("node-3",), threshold=3).encode()


def test_other_kinds_still_need_a_committee_of_their_threshold() -> None:
    for kind in ("refresh", "reshare", "ot-resetup"):
        with pytest.raises(gov.CeremonyAuthError, match="more than the committee's 1 nodes"):
            body(kind=kind, committee=("node-3",)).encode()
