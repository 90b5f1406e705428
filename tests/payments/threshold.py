"""Threshold Ed25519 signing in this process for the rail tests: a 2-of-3 FROST key from a
DKG (mpc.testing), so no whole private key ever exists here either."""

from __future__ import annotations

from mpc import frost
from mpc.frost import ED25519_SHA512
from mpc.groups import ED25519
from mpc.testing import run_dkg_local


class ThresholdEd25519:
    def __init__(self) -> None:
        self.keys = {k.identifier: k for k in run_dkg_local(ED25519, 2, 3)}
        public = next(iter(self.keys.values())).public
        self.public_key = ED25519_SHA512.encode_public_key(public.group_public_key).hex()

    def sign(self, msg: bytes, signers: tuple[int, ...] = (1, 3)) -> str:
        pairs = {i: frost.commit(ED25519_SHA512, self.keys[i]) for i in signers}
        pkg = frost.signing_package([pairs[i][1] for i in signers], msg)
        shares = [frost.sign(pkg, pairs[i][0], self.keys[i]) for i in signers]
        return frost.aggregate(pkg, shares, self.keys[signers[0]].public).hex()
