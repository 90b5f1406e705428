"""A regtest-style UTXO set in process: funding, mempool acceptance judged by Bitcoin Core's
script interpreter, blocks and confirmations.

:class:`Regtest` holds the confirmed UTXO set, a mempool and a chain of blocks (no proof of
work, no reorgs). :meth:`Regtest.fund` mines a coinbase-style transaction paying a script or
address (demo and test plumbing; no subsidy limit). :meth:`Regtest.accept` is Bitcoin Core's
``sendrawtransaction`` in the checks that matter for a custody spend, in Core's order and
with Core's reject reasons (``validation.cpp`` ``MemPoolAccept::PreChecks`` and
``consensus/tx_check.cpp``, ``consensus/tx_verify.cpp``, ``policy/policy.cpp``):

1. decoding: one transaction, exactly (``TX decode failed``);
2. ``CheckTransaction``: inputs and outputs present, output amounts in range, no input
   spent twice by the same transaction, base size within the block limit; a coinbase is
   refused (``coinbase``);
3. standardness, Core's ``IsStandardTx`` as btclib ports it (``btclib.policy``): version 1
   to 3, weight at most 400 000 (``tx-size``), push-only scriptSigs, standard output
   scripts (``scriptpubkey``, ``datacarrier``); no dust output (``dust``: Core lets one
   through only in a 0-fee transaction); then a non-witness size of at least 65 bytes
   (``tx-size-small``);
4. finality at the next block's height (``non-final``; time-based lock times are not
   modelled and are refused unless every sequence is final);
5. already known (``txn-already-in-mempool``, ``txn-already-known``);
6. every input exists and is unspent, in a block or in the mempool
   (``bad-txns-inputs-missingorspent``), is not spent by a mempool transaction
   (``txn-mempool-conflict``: no replacement), and a coinbase output has matured
   (``bad-txns-premature-spend-of-coinbase``, 100 blocks like Core);
7. BIP-68 relative lock times by height (``non-BIP68-final``; by time: refused);
8. amounts: outputs no more than inputs (``bad-txns-in-belowout``), fee at least the
   minimum relay fee for the vsize (``min relay fee not met``);
9. **every input's script** verified by libbitcoinkernel (py-bitcoinkernel,
   ``btck_script_pubkey_verify``) with all the spent outputs (taproot's sighash commits to
   every input's amount and script) and every consensus flag (``ALL``: P2SH, DERSIG,
   NULLDUMMY, CLTV, CSV, WITNESS, TAPROOT): ``mandatory-script-verify-flag-failed``.

A refusal is :class:`Rejected`, naming the reason and, where there is one, the input
(index and outpoint) or output at fault. :meth:`Regtest.mine` confirms the mempool in a
block; :meth:`Regtest.status` gives a transaction's confirmations, ``tip - height + 1``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

import pbk
from btclib import policy
from btclib.exceptions import BTClibTypeError, BTClibValueError
from btclib.script.solver import solver
from btclib.tx import Tx as BtclibTx
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from payments.btc.fees import MAX_STANDARD_TX_WEIGHT, MIN_RELAY_FEE, FeeRate, dust_threshold
from payments.btc.selection import MAX_MONEY, Utxo
from payments.btc.tx import ParsedTx, TxDecodeError, output_script, parse_tx, sha256d

__all__ = [
    "COINBASE_MATURITY",
    "Accepted",
    "BitcoinChain",
    "Coin",
    "Rejected",
    "TxStatus",
    "Block",
    "Regtest",
    "UtxoSet",
    "verify_scripts",
]

COINBASE_MATURITY: Final = 100  # consensus/consensus.h
MAX_BLOCK_WEIGHT: Final = 4_000_000
MIN_STANDARD_TX_NONWITNESS_SIZE: Final = 65
LOCKTIME_THRESHOLD: Final = 500_000_000
SEQUENCE_FINAL: Final = 0xFFFFFFFF
SEQUENCE_LOCKTIME_DISABLE_FLAG: Final = 1 << 31
SEQUENCE_LOCKTIME_TYPE_FLAG: Final = 1 << 22
SEQUENCE_LOCKTIME_MASK: Final = 0x0000FFFF
NULL_TXID: Final = "00" * 32


@dataclass(frozen=True)
class Coin:
    """An unspent output: where it is, what it holds, and the height of its block (the
    next block's height for an output of a mempool transaction)."""

    txid: str
    vout: int
    amount: int
    script: bytes
    height: int | None  # None while its transaction is in the mempool
    coinbase: bool = False

    def utxo(self) -> Utxo:
        return Utxo(self.txid, self.vout, self.amount, self.script)


class Rejected(Exception):
    """A transaction the mempool refuses: Core's ``reason``, the input or output at fault
    (``where``, e.g. ``input 1 (txid:vout)``), and the detail."""

    def __init__(
        self, reason: str, detail: str, *, input_index: int | None = None, where: str = ""
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.input_index = input_index
        self.where = where
        super().__init__(f"{where}: {reason}: {detail}" if where else f"{reason}: {detail}")


@dataclass(frozen=True)
class TxStatus:
    txid: str
    state: Literal["mempool", "confirmed", "unknown"]
    height: int | None
    confirmations: int
    block_hash: str | None


@dataclass(frozen=True)
class Accepted:
    """What :meth:`Regtest.test_accept` reports of a transaction the mempool would take."""

    txid: str
    wtxid: str
    vsize: int
    fee: int


@dataclass(frozen=True)
class Block:
    height: int
    hash: str
    prev_hash: str
    merkle_root: str
    txids: tuple[str, ...]


@dataclass
class _MempoolEntry:
    parsed: ParsedTx
    fee: int
    spends: tuple[tuple[str, int], ...]
    outputs: tuple[Coin, ...] = field(default_factory=tuple)


class BitcoinChain(Protocol):
    """What the rail needs of a chain: the regtest set here, or a node's RPC behind it."""

    @property
    def height(self) -> int: ...

    def utxos(self, script: bytes) -> list[Utxo]: ...

    def accept(self, tx_hex: str) -> str: ...

    def status(self, txid: str) -> TxStatus: ...


def verify_scripts(tx: bytes, spent: Sequence[tuple[bytes, int]]) -> list[int]:
    """libbitcoinkernel's verification of every input of ``tx`` against the outputs it spends
    (``spent[i] = (scriptPubKey, amount)``), with every consensus flag; the indices of the
    inputs that fail (empty: all pass)."""
    ktx = pbk.Transaction(tx)
    outs = [pbk.TransactionOutput(pbk.ScriptPubkey(s), a) for s, a in spent]
    pre = pbk.script.PrecomputedTransactionData(ktx, outs)
    failed = []
    for i, (script, amount) in enumerate(spent):
        try:
            ok = pbk.ScriptPubkey(script).verify(
                amount, ktx, pre, i, pbk.ScriptVerificationFlags.ALL
            )
        except pbk.ScriptVerifyException:
            ok = False
        if not ok:
            failed.append(i)
    return failed


def _standardness(p: ParsedTx) -> None:
    """Core's ``IsStandardTx`` through btclib's port (``btclib.policy.assert_standard_tx``,
    whose error is Core's reject reason), naming the output at fault where there is one."""
    try:
        btx = BtclibTx.parse(p.raw)
    except (BTClibValueError, BTClibTypeError) as exc:
        raise Rejected("TX decode failed", f"btclib: {str(exc)[:120]}") from None
    try:
        policy.assert_standard_tx(btx)
    except BTClibValueError as exc:
        reason = str(exc)
        where = ""
        if reason in ("scriptpubkey", "datacarrier", "bare-multisig"):
            for j, out in enumerate(btx.vout):
                kind, _ = solver(out.script_pub_key.script)
                if kind in ("nonstandard", "nulldata", "multisig"):
                    where = f"output {j}"
                    break
        elif reason == "dust":
            where = f"outputs {policy.dust_outputs(btx)}"
        detail = {
            "version": f"version {btx.version} is not standard",
            "tx-size": f"weight {btx.weight} exceeds the standard {MAX_STANDARD_TX_WEIGHT}",
            "dust": "more than one dust output",
        }.get(reason, "not standard (Bitcoin Core policy)")
        raise Rejected(reason, detail, where=where) from None
    dust = policy.dust_outputs(btx)
    if dust:
        # Core's ephemeral dust rule (policy/ephemeral_policy.cpp): the one dust output
        # IsStandardTx lets through needs a 0-fee transaction; every payment here pays one
        j = dust[0]
        raise Rejected(
            "dust",
            f"{btx.vout[j].value} sat is below the dust threshold of "
            f"{dust_threshold(btx.vout[j].script_pub_key.script)} sat",
            where=f"output {j}",
        )


def _bip34_script_sig(height: int, extra: int) -> bytes:
    """A coinbase scriptSig: the height as a minimal push (BIP-34), then an extra nonce."""
    h = height.to_bytes((height.bit_length() + 8) // 8, "little") if height else b""
    head = bytes([0x00]) if height == 0 else bytes([len(h)]) + h
    e = extra.to_bytes(8, "little")
    return head + bytes([len(e)]) + e


def _merkle_root(txids: Sequence[str]) -> str:
    """The Bitcoin merkle root of ``txids`` (display order in, display order out)."""
    layer = [bytes.fromhex(t)[::-1] for t in txids] or [bytes(32)]
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [sha256d(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0][::-1].hex()


class Regtest:
    """The in-process UTXO set, mempool and chain (module docstring). Thread-safe."""

    def __init__(
        self,
        network: str = "regtest",
        *,
        min_relay_fee: FeeRate = MIN_RELAY_FEE,
        coinbase_maturity: int = COINBASE_MATURITY,
    ) -> None:
        self.network = network
        self.min_relay_fee = min_relay_fee
        self.coinbase_maturity = coinbase_maturity
        self._lock = threading.RLock()
        self._coins: dict[tuple[str, int], Coin] = {}
        self._mempool: dict[str, _MempoolEntry] = {}
        self._spent_by: dict[tuple[str, int], str] = {}  # outpoint -> mempool txid
        self._confirmed: dict[str, int] = {}  # txid -> height
        self._blocks: list[Block] = []
        self._extra = 0
        self._mine_block([])  # genesis (height 0)

    # -- chain ----------------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The tip's height."""
        with self._lock:
            return len(self._blocks) - 1

    @property
    def tip(self) -> Block:
        with self._lock:
            return self._blocks[-1]

    def block(self, height: int) -> Block:
        with self._lock:
            return self._blocks[height]

    def _mine_block(self, txids: list[str]) -> Block:
        prev = self._blocks[-1].hash if self._blocks else NULL_TXID
        height = len(self._blocks)
        root = _merkle_root(txids)
        # an 80-byte header of version, previous hash, merkle root, time = height, regtest
        # bits, nonce 0: no proof of work, only a unique, chained id
        header = (
            (4).to_bytes(4, "little")
            + bytes.fromhex(prev)[::-1]
            + bytes.fromhex(root)[::-1]
            + height.to_bytes(4, "little")
            + bytes.fromhex("207fffff")[::-1]
            + bytes(4)
        )
        block = Block(height, sha256d(header)[::-1].hex(), prev, root, tuple(txids))
        self._blocks.append(block)
        for t in txids:
            self._confirmed[t] = height
        return block

    def _confirm(self, first: Sequence[str] = ()) -> Block:
        """Mine one block: ``first`` (a coinbase), then every mempool transaction in the
        order accepted (a parent is always accepted before its child)."""
        entries = list(self._mempool.items())
        height = self.height + 1
        for _, entry in entries:
            for op in entry.spends:
                del self._coins[op]
                del self._spent_by[op]
            for c in entry.outputs:
                self._coins[(c.txid, c.vout)] = Coin(c.txid, c.vout, c.amount, c.script, height)
        self._mempool.clear()
        return self._mine_block([*first, *(t for t, _ in entries)])

    def mine(self, count: int = 1) -> list[Block]:
        """Mine ``count`` blocks; the first confirms every mempool transaction."""
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            blocks = [self._confirm()]
            blocks += [self._mine_block([]) for _ in range(count - 1)]
            return blocks

    def fund(self, to: str | bytes, amounts: Sequence[int], *, mature: bool = True) -> list[Coin]:
        """Mine a coinbase-style transaction paying ``amounts`` to ``to`` (an address on
        this network or a scriptPubKey), one output each, in a block that also confirms
        the mempool; with ``mature``, mine the blocks after it that make its outputs
        spendable (coinbase maturity: 100 blocks, as in Core)."""
        script = output_script(to, self.network, field="to") if isinstance(to, str) else to
        if not amounts or any(not 0 < a <= MAX_MONEY for a in amounts):
            raise ValueError(f"amounts must be 1..{MAX_MONEY} sat each, got {list(amounts)}")
        with self._lock:
            height = self.height + 1
            self._extra += 1
            tx = Transaction(
                version=2,
                vin=[
                    TransactionInput(
                        bytes(32),
                        0xFFFFFFFF,
                        script_sig=Script(_bip34_script_sig(height, self._extra)),
                        sequence=SEQUENCE_FINAL,
                    )
                ],
                vout=[TransactionOutput(a, Script(script)) for a in amounts],
                locktime=0,
            )
            parsed = parse_tx(tx.serialize())
            coins = [Coin(parsed.txid, i, a, script, height, True) for i, a in enumerate(amounts)]
            for c in coins:
                self._coins[(c.txid, c.vout)] = c
            self._confirm([parsed.txid])
            if mature:
                for _ in range(self.coinbase_maturity - 1):
                    self._mine_block([])
            return coins

    # -- queries --------------------------------------------------------------------------

    def utxos(self, script: bytes, *, include_mempool: bool = False) -> list[Utxo]:
        """The outputs paying ``script`` that no transaction (mined or in the mempool)
        spends, spendable in the next block (mature), confirmed ones only by default."""
        with self._lock:
            out = [
                c.utxo()
                for op, c in self._coins.items()
                if c.script == script
                and op not in self._spent_by
                and self._mature(c, self.height + 1)
                and (include_mempool or c.height is not None)
            ]
            for e in self._mempool.values() if include_mempool else ():
                out += [
                    c.utxo()
                    for c in e.outputs
                    if c.script == script and (c.txid, c.vout) not in self._spent_by
                ]
            return sorted(out, key=lambda u: (u.txid, u.vout))

    def balance(self, script: bytes) -> int:
        return sum(u.amount for u in self.utxos(script))

    def coin(self, txid: str, vout: int) -> Coin | None:
        """The unspent output ``txid:vout`` (confirmed or in the mempool), if any."""
        with self._lock:
            c = self._coins.get((txid, vout))
            if c is not None:
                return c
            e = self._mempool.get(txid)
            if e is not None and vout < len(e.outputs):
                return e.outputs[vout]
            return None

    def status(self, txid: str) -> TxStatus:
        with self._lock:
            if txid in self._mempool:
                return TxStatus(txid, "mempool", None, 0, None)
            h = self._confirmed.get(txid)
            if h is None:
                return TxStatus(txid, "unknown", None, 0, None)
            return TxStatus(txid, "confirmed", h, self.height - h + 1, self._blocks[h].hash)

    @property
    def mempool(self) -> list[str]:
        with self._lock:
            return list(self._mempool)

    # -- acceptance -----------------------------------------------------------------------

    def _mature(self, coin: Coin, next_height: int) -> bool:
        return (
            not coin.coinbase
            or coin.height is None
            or next_height - coin.height >= self.coinbase_maturity
        )

    @staticmethod
    def _parse(tx_hex: str) -> ParsedTx:
        try:
            raw = bytes.fromhex(tx_hex)
        except (ValueError, TypeError):
            raise Rejected("TX decode failed", "not hex") from None
        try:
            return parse_tx(raw)
        except TxDecodeError as exc:
            raise Rejected("TX decode failed", str(exc)) from None

    def test_accept(self, tx_hex: str) -> Accepted:
        """Core's ``testmempoolaccept``: every check of :meth:`accept`, nothing kept."""
        parsed = self._parse(tx_hex)
        with self._lock:
            entry = self._check(parsed)
        return Accepted(parsed.txid, parsed.wtxid, parsed.vsize, entry.fee)

    def accept(self, tx_hex: str) -> str:
        """Bitcoin Core's mempool acceptance (module docstring); the txid, or
        :class:`Rejected`."""
        parsed = self._parse(tx_hex)
        with self._lock:
            entry = self._check(parsed)
            self._mempool[parsed.txid] = entry
            for op in entry.spends:
                self._spent_by[op] = parsed.txid
            return parsed.txid

    def _check(self, p: ParsedTx) -> _MempoolEntry:
        tx = p.tx
        # 2. CheckTransaction (consensus/tx_check.cpp)
        if not tx.vin:
            raise Rejected("bad-txns-vin-empty", "the transaction has no inputs")
        if not tx.vout:
            raise Rejected("bad-txns-vout-empty", "the transaction has no outputs")
        if p.base_size * 4 > MAX_BLOCK_WEIGHT:
            raise Rejected("bad-txns-oversize", f"base size {p.base_size} bytes")
        total_out = 0
        for j, out in enumerate(tx.vout):
            if not 0 <= out.value <= MAX_MONEY:
                raise Rejected("bad-txns-vout-toolarge", f"{out.value} sat", where=f"output {j}")
            total_out += out.value
            if total_out > MAX_MONEY:
                raise Rejected("bad-txns-txouttotal-toolarge", f"{total_out} sat")
        outpoints = [(vin.txid.hex(), vin.vout) for vin in tx.vin]
        names = [f"input {i} ({t}:{v})" for i, (t, v) in enumerate(outpoints)]
        seen: dict[tuple[str, int], int] = {}
        for i, op in enumerate(outpoints):
            if op in seen:
                raise Rejected(
                    "bad-txns-inputs-duplicate",
                    f"also spent by input {seen[op]}",
                    input_index=i,
                    where=names[i],
                )
            seen[op] = i
        if len(tx.vin) == 1 and outpoints[0] == (NULL_TXID, 0xFFFFFFFF):
            raise Rejected("coinbase", "a coinbase is not accepted into the mempool")
        # 3. standardness (policy/policy.cpp IsStandardTx), then the non-witness size
        _standardness(p)
        if p.base_size < MIN_STANDARD_TX_NONWITNESS_SIZE:
            raise Rejected("tx-size-small", f"non-witness size {p.base_size} bytes")
        next_height = self.height + 1
        # 4. finality (consensus/tx_verify.cpp IsFinalTx) at the next block
        if tx.locktime and any(vin.sequence != SEQUENCE_FINAL for vin in tx.vin):
            if tx.locktime >= LOCKTIME_THRESHOLD:
                raise Rejected("non-final", "time-based lock times are not modelled")
            if tx.locktime >= next_height:
                raise Rejected(
                    "non-final", f"lock time {tx.locktime} >= next block height {next_height}"
                )
        # 5. already known
        if p.txid in self._mempool:
            raise Rejected("txn-already-in-mempool", p.txid)
        if p.txid in self._confirmed:
            raise Rejected("txn-already-known", p.txid)
        # 6. inputs
        spent: list[Coin] = []
        for i, op in enumerate(outpoints):
            conflict = self._spent_by.get(op)
            if conflict is not None:
                raise Rejected(
                    "txn-mempool-conflict",
                    f"already spent by mempool transaction {conflict}",
                    input_index=i,
                    where=names[i],
                )
            coin = self.coin(*op)
            if coin is None:
                raise Rejected(
                    "bad-txns-inputs-missingorspent",
                    "no such unspent output",
                    input_index=i,
                    where=names[i],
                )
            if not self._mature(coin, next_height):
                assert coin.height is not None
                raise Rejected(
                    "bad-txns-premature-spend-of-coinbase",
                    f"coinbase at height {coin.height} spendable from height "
                    f"{coin.height + self.coinbase_maturity}",
                    input_index=i,
                    where=names[i],
                )
            spent.append(coin)
        # 7. BIP-68 relative lock times (consensus/tx_verify.cpp CalculateSequenceLocks)
        if tx.version >= 2:
            for i, (vin, coin) in enumerate(zip(tx.vin, spent, strict=True)):
                if vin.sequence & SEQUENCE_LOCKTIME_DISABLE_FLAG:
                    continue
                if vin.sequence & SEQUENCE_LOCKTIME_TYPE_FLAG:
                    raise Rejected(
                        "non-BIP68-final",
                        "time-based relative locks are not modelled",
                        input_index=i,
                        where=names[i],
                    )
                coin_height = coin.height if coin.height is not None else next_height
                min_height = coin_height + (vin.sequence & SEQUENCE_LOCKTIME_MASK) - 1
                if min_height >= next_height:
                    raise Rejected(
                        "non-BIP68-final",
                        f"relative lock until height {min_height + 1}",
                        input_index=i,
                        where=names[i],
                    )
        # 8. amounts (consensus/tx_verify.cpp CheckTxInputs; validation.cpp fee checks)
        total_in = sum(c.amount for c in spent)
        if total_in < total_out:
            raise Rejected(
                "bad-txns-in-belowout", f"value in ({total_in}) < value out ({total_out})"
            )
        fee = total_in - total_out
        needed = self.min_relay_fee.fee(p.vsize)
        if fee < needed:
            raise Rejected(
                "min relay fee not met",
                f"{fee} < {needed} sat for {p.vsize} vB at {self.min_relay_fee}",
            )
        # 9. scripts, by libbitcoinkernel, with every spent output
        failed = verify_scripts(p.raw, [(c.script, c.amount) for c in spent])
        if failed:
            i = failed[0]
            raise Rejected(
                "mandatory-script-verify-flag-failed",
                "Bitcoin Core's script verification (libbitcoinkernel, flags ALL) refused "
                "the input" + (f"; also inputs {failed[1:]}" if failed[1:] else ""),
                input_index=i,
                where=names[i],
            )
        outputs = tuple(
            Coin(p.txid, j, out.value, out.script_pubkey.data, None)
            for j, out in enumerate(tx.vout)
        )
        return _MempoolEntry(p, fee, tuple(outpoints), outputs)


UtxoSet = Regtest  # the name the issue uses
