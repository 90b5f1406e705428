"""Chain acceptance, judged by code that is not ours, with keys that are never whole.

* ``evm-tx``: a DKLs23 2-of-3 key (in-process DKG) signs the decoded digest; eth-account
  recovers the sender from the signed transaction and eth-tester (py-evm) mines it with
  status 1. That chain does not check the chain id, so the test asserts the decoded one.
* ``btc-psbt``: a FROST(BIP-340) 2-of-3 sharing from the test dealer (the key is never
  formed), tweaked to its BIP-86 output key with :func:`mpc.frost.taproot_tweak`, signs each
  input's sighash; Bitcoin Core's script interpreter (py-bitcoinkernel) accepts the
  finalized key-path spend and refuses a tampered one.
"""

from __future__ import annotations

import secrets

import pbk
import pytest
from eth.vm.forks.london.transactions import UnsignedDynamicFeeTransaction
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils.address import to_checksum_address

from custody.kinds import KindError, btc, decode, evm
from custody.kinds.addresses import ethereum_address, p2tr_script, taproot_output_key
from mpc import dkls23, frost
from mpc.groups import SECP256K1
from mpc.testing import MemoryLedger, run_keygen_local, run_local
from tests.custody.kinds.btc_build import b64, build_psbt
from tests.mpc.conftest import dealer_split_for_tests

# -- Ethereum -------------------------------------------------------------------------------


def dkls_sign(keys: dict[int, dkls23.EcdsaKeyShare], digest: bytes) -> dkls23.EcdsaSignature:
    signers = (1, 3)
    sid = secrets.token_bytes(32)
    pres = run_local({i: dkls23.PresignSession(keys[i], sid, signers) for i in signers})
    parts = [
        dkls23.sign_with_presignature(pres[i], keys[i], digest, ledger=MemoryLedger())
        for i in signers
    ]
    public = pres[signers[0]].public
    return dkls23.combine_signature(public, parts, digest, keys[1].group_public_key)


def unsigned_1559(chain_id: int, base_fee: int, to: bytes, value: int, data: bytes) -> str:
    """Built by py-evm, nonce 0."""
    tx = UnsignedDynamicFeeTransaction(
        chain_id=chain_id,
        nonce=0,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=2 * base_fee + 10**9,
        gas=100_000,
        to=to,
        value=value,
        data=data,
        access_list=[],
    )
    return "0x" + tx.get_message_for_signing().hex()


@pytest.mark.parametrize("value,data", [(12345, b""), (0, b"\x01\x02")])
def test_evm_tx_signed_by_dkls23_is_recovered_and_mined(value: int, data: bytes) -> None:
    keys = run_keygen_local(2, 3)
    pubkey = keys[1].group_public_key.encode()  # 33-byte compressed
    sender = ethereum_address(pubkey)

    tester = EthereumTester(PyEVMBackend())
    funder = tester.get_accounts()[0]  # eth-tester's own genesis account, funded by it
    tester.send_transaction({"from": funder, "to": sender, "value": 10**18, "gas": 21000})
    chain_id = tester.backend.chain.chain_id
    base_fee = tester.get_block_by_number("pending")["base_fee_per_gas"]
    to = secrets.token_bytes(20)

    payload = {"tx": unsigned_1559(chain_id, base_fee, to, value, data)}
    intent = decode("evm-tx", payload, scheme="ecdsa-secp256k1")
    assert isinstance(intent, evm.EvmTx)
    assert intent.chain_id == chain_id == 131277322940537  # the test chain does not check it
    assert intent.to == to_checksum_address(to) and intent.value == value

    sig = dkls_sign(keys, intent.messages[0])
    assert sig.recovery_id in (0, 1)
    result = evm.result(intent, sig.r, sig.s, sig.recovery_id, public_key=pubkey)
    signed = result["signed_tx"]
    assert signed.startswith("0x02")
    assert Account.recover_transaction(signed) == sender

    tx_hash = tester.send_raw_transaction(signed)
    receipt = tester.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    mined = tester.get_transaction_by_hash(tx_hash)
    assert mined["from"] == sender and mined["to"] == to_checksum_address(to)
    assert tester.get_balance(to_checksum_address(to)) == value


def test_message_signed_by_dkls23_is_an_eip191_personal_sign() -> None:
    keys = run_keygen_local(2, 3)
    address = ethereum_address(keys[1].group_public_key.encode())
    text = "I control this address: tp-wallet-custody"
    intent = decode("message", {"message": "0x" + text.encode().hex()}, scheme="ecdsa-secp256k1")
    sig = dkls_sign(keys, intent.messages[0])
    signature = (
        sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([27 + sig.recovery_id])
    )
    assert Account.recover_message(encode_defunct(text=text), signature=signature) == address


# -- Bitcoin --------------------------------------------------------------------------------


def frost_sign(keys: dict, signers: list[int], msg: bytes) -> bytes:
    suite = frost.ciphersuite("bip340")
    pairs = {i: frost.commit(suite, keys[i]) for i in signers}
    pkg = frost.signing_package([pairs[i][1] for i in signers], msg)
    shares = [frost.sign(pkg, pairs[i][0], keys[i]) for i in signers]
    sig: bytes = frost.aggregate(pkg, shares, keys[signers[0]].public)
    return sig


def core_verifies(tx_hex: str, spk: bytes, amounts: list[int]) -> bool:
    """Bitcoin Core's own script verification (libbitcoinkernel) of every input."""
    tx = pbk.Transaction(bytes.fromhex(tx_hex))
    spent = [pbk.TransactionOutput(pbk.ScriptPubkey(spk), a) for a in amounts]
    pre = pbk.script.PrecomputedTransactionData(tx, spent)
    flags = pbk.ScriptVerificationFlags.ALL
    try:
        return all(
            pbk.ScriptPubkey(spk).verify(a, tx, pre, i, flags) for i, a in enumerate(amounts)
        )
    except pbk.ScriptVerifyException:
        return False


def test_btc_psbt_key_path_spend_passes_bitcoin_core() -> None:
    shares = dealer_split_for_tests(SECP256K1, 2, 3)
    suite = frost.ciphersuite("bip340")
    internal = suite.encode_public_key(shares[1].public.group_public_key)  # x-only
    tweaked = {i: frost.taproot_tweak(k) for i, k in shares.items()}
    output_key = suite.encode_public_key(tweaked[1].public.group_public_key)
    assert output_key == taproot_output_key(internal)

    spk = p2tr_script(output_key)
    amounts = [70_000, 31_000]
    ins = [
        (secrets.token_bytes(32), 0, amounts[0], 0),
        (secrets.token_bytes(32), 5, amounts[1], 0xFFFFFFFD),
    ]
    outs = [(p2tr_script(taproot_output_key(internal)), 60_000), (b"\x00\x14" + bytes(20), 40_000)]
    psbt = build_psbt(internal, ins, outs, locktime=800_000)
    intent = decode("btc-psbt", b64(psbt), scheme="bip340", public_key=internal, network="regtest")
    assert isinstance(intent, btc.BtcPsbt) and intent.fee == 1_000

    sigs = [frost_sign(tweaked, [2, 3], m) for m in intent.messages]
    signed = btc.finalize(intent, sigs)
    assert core_verifies(signed, spk, amounts)

    # tampered: one output amount changed after signing, or a signature swapped between inputs
    raw = bytearray(bytes.fromhex(signed))
    at = raw.find((60_000).to_bytes(8, "little"))
    raw[at] ^= 1
    assert not core_verifies(raw.hex(), spk, amounts)
    swapped = intent.__class__(**{**intent.__dict__, "sighashes": intent.sighashes[::-1]})
    with pytest.raises(KindError):
        btc.finalize(swapped, sigs)  # refused before it is placed: each is checked
    bad_sig = bytearray(bytes.fromhex(signed))
    at = bad_sig.find(sigs[1])
    bad_sig[at + 63] ^= 1
    assert not core_verifies(bad_sig.hex(), spk, amounts)
    assert not core_verifies(signed, spk, [amounts[0], amounts[1] + 1])  # other prevout value
