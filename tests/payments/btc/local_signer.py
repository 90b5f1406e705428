"""A 2-of-3 FROST(BIP-340) key made by an in-process DKG (the key is never whole), tweaked
to its BIP-86 output key, that signs PSBT sighashes for the cluster-free tests."""

from __future__ import annotations

from mpc import frost
from mpc.shamir import KeyPackage
from mpc.testing import run_dkg_local

SUITE = frost.ciphersuite("bip340")


class LocalKey:
    def __init__(self) -> None:
        keys = {kp.identifier: kp for kp in run_dkg_local(SUITE.group, 2, 3)}
        self.internal_key: bytes = SUITE.encode_public_key(keys[1].public.group_public_key)
        self._tweaked: dict[int, KeyPackage] = {i: frost.taproot_tweak(k) for i, k in keys.items()}
        self.output_key: bytes = SUITE.encode_public_key(self._tweaked[1].public.group_public_key)

    def sign(self, message: bytes, signers: tuple[int, int] = (1, 3)) -> bytes:
        """A FROST signature of ``message`` by two of the three shares, under x(Q)."""
        pairs = {i: frost.commit(SUITE, self._tweaked[i]) for i in signers}
        pkg = frost.signing_package([pairs[i][1] for i in signers], message)
        shares = [frost.sign(pkg, pairs[i][0], self._tweaked[i]) for i in signers]
        sig: bytes = frost.aggregate(pkg, shares, self._tweaked[signers[0]].public)
        return sig
