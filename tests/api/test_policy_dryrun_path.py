"""POST /v1/policy/dry-run takes a sign request's ``derivation_path`` (issue 13): the request
is evaluated under the key's child at that path, as signing evaluates it; a hardened step
is the same 422 ``hardened-derivation`` naming it, a malformed path an
``invalid-sign-request`` naming the field, and nothing is created."""

from __future__ import annotations

from sqlalchemy import select

from api.db import Key
from mpc.groups import SECP256K1
from mpc.shamir import lagrange_coefficient
from tests.api.conftest import Api, nothing_up_my_sleeve_point
from tests.api.test_auth_problems import assert_problem
from tests.api.test_policy_dryrun import ETH, KEY_ID, T0, counts, dry, evm, gapi
from tests.custody.policy.helpers import ALICE

__all__ = ["gapi"]  # the fixture, imported for this module's tests


def public_sharing(api: Api, key_id: str) -> None:
    """Give the key row public values a DKG would leave: verifying shares of parties 1 and 2
    are points nobody knows the discrete log of, party 3's and the group key lie on the
    same degree-1 polynomial (interpolated in the exponent; no secret exists anywhere)."""
    g = SECP256K1
    v = {i: g.decode_point(nothing_up_my_sleeve_point(b"dry-run share %d" % i)) for i in (1, 2)}
    at = {
        j: g.sum([v[i] * lagrange_coefficient(g, i, [1, 2], at=j) for i in (1, 2)]) for j in (0, 3)
    }
    shares = {str(i): p.encode().hex() for i, p in {**v, 3: at[3]}.items()}
    with api.app.state.db.session() as s:
        row = s.scalar(select(Key).where(Key.id == key_id))
        assert row is not None
        row.public_key, row.verifying_shares = at[0].encode().hex(), shares
        s.commit()


def test_dry_run_under_a_derivation_path(gapi: Api) -> None:
    public_sharing(gapi, KEY_ID)
    before = counts(gapi)
    root = dry(gapi, evm(ALICE, ETH // 2, KEY_ID, at=T0))
    child = dry(gapi, evm(ALICE, ETH // 2, KEY_ID, at=T0, derivation_path="m/0/7"))
    assert root.status_code == child.status_code == 200, child.text
    r, c = root.json(), child.json()
    assert (c["action"], c["rule"], c["reason"]) == ("allow", "small-eth", "policy-allowed")
    assert c["facts"] == r["facts"]  # the same key id and intent, decoded under the child
    big = dry(gapi, evm(ALICE, 2 * ETH, KEY_ID, at=T0, derivation_path="m/1")).json()
    assert (big["action"], big["rule"]) == ("approve", "big-eth")

    p = assert_problem(
        dry(gapi, evm(ALICE, 1, KEY_ID, derivation_path="m/0'/1")), 422, "hardened-derivation"
    )
    assert p["field"] == "derivation_path" and "0'" in p["detail"], p
    p = assert_problem(
        dry(gapi, evm(ALICE, 1, KEY_ID, derivation_path="m/x")), 422, "invalid-sign-request"
    )
    assert p["field"] == "derivation_path", p
    assert counts(gapi) == before
