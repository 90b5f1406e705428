"""``frost.preprocess`` accepts exactly its documented cap of 10,000 nonce pairs per call.

Its own file, listed last in the mutation selection (mutation.toml): it costs a few seconds.
"""

from __future__ import annotations

import pytest

from mpc import frost
from mpc.errors import UsageError
from tests.mpc.conftest import dealer_split_for_tests


def test_preprocess_accepts_the_cap_and_refuses_one_more() -> None:
    suite = frost.ciphersuite("ed25519")
    keys = dealer_split_for_tests(suite.group, 2, 3)
    batch = frost.preprocess(suite, keys[1], 10_000)
    assert len(batch) == 10_000
    assert all(c.identifier == 1 and not n.used for n, c in batch[:3])
    with pytest.raises(UsageError, match=r"preprocess count must be in \[1, 10000\]"):
        frost.preprocess(suite, keys[1], 10_001)
