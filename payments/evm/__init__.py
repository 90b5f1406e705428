"""The Ethereum rail of the payment core: EIP-1559 ether and ERC-20 transfers, signed by
custody as ``evm-tx``, broadcast to a chain, confirmed from receipts.

Flow of one payment (the service persists each step; every call here is synchronous)::

    rail = EvmRail(chain)                                  # chain: EthTesterChain | JsonRpcChain
    nonce, state = rail.reserve_nonce(state, payment_id)   # persist `state` (NonceState.to_json)
    tx = rail.build_ether_transfer(sender=addr, to=dest, value=wei, nonce=nonce)
    #  or rail.build_erc20_transfer(sender=addr, token=tok, recipient=dest, amount=n, nonce=nonce)
    state = state.signed(payment_id)      # BEFORE asking: a signature may exist from here on,
                                          # so the nonce stays with this payment
    sr = custody_client.sign(key_id, kind="evm-tx", payload=tx.payload,
                             idempotency_key=f"{payment_id}:{attempt}")  # may await approvals
    # a build failure before signed(): state.release(payment_id); custody's final "no"
    # (denied, rejected, failed, expired): state.release(payment_id, never_signed=True)
    signed = rail.attach(tx, sr, key.public_key)           # BuildError if anything is off
    rail.ready(state, payment_id)         # every lower nonce broadcast? (else wait, then send)
    tx_hash = rail.broadcast(signed)      # ChainUnavailable -> keep, broadcast(signed) again
    #   TxRejected -> rail.is_consumed(addr, nonce)? state.consumed(...) : rebuild at the SAME
    #                 nonce with fresh fees and sign again (never a new nonce: double pay)
    state = state.broadcast(payment_id)
    rail.confirmation(tx_hash)            # pending | included | failed | confirmed
    state = state.consumed(payment_id)    # once mined (failed too: a revert spends the nonce)

Modules:

* :mod:`payments.evm.chain`: the :class:`Chain` protocol (chain id, pending transaction count,
  balance, latest base fee and suggested tip, gas estimate, raw send, receipt, ``eth_call``,
  block number) and its two implementations, :class:`EthTesterChain` (eth-tester on py-evm,
  in process) and :class:`JsonRpcChain` (standard ``eth_*`` JSON-RPC over httpx); errors
  :class:`TxRejected` (refused for good) and :class:`ChainUnavailable` (outcome unknown).
* :mod:`payments.evm.tx`: :class:`UnsignedTx` (``0x02 || rlp(...)``, decoded again by
  custody's own decoder at construction), ERC-20 ``transfer`` calldata, the fee rule
  ``max_fee = 2 * base_fee + tip`` (:class:`Fees`), :func:`assemble` (custody's assembler:
  low s, recovers to the key).
* :mod:`payments.evm.nonces`: :class:`NonceState`, per-address nonce reservation that the
  service stores (JSON) and that reconciles with the chain's pending count; a nonce stays
  with its payment once signed (retry at the same nonce), is released only if never
  signed; nonce order and gap handling documented there.
* :mod:`payments.evm.rail`: :class:`EvmRail` (build, attach, broadcast, confirmation),
  :class:`Confirmation` (``confirmations = head - block + 1``), :func:`erc20_transfers`.
* :mod:`payments.evm.token`: the committed Vyper ERC-20 test token (source and compiled
  artifact) and its deploy helper for the in-process chain.

Amounts are integers in the smallest unit (wei; the token's base unit). Addresses are
EIP-55 on the way out; mixed-case input must carry a valid checksum. Custody's demo policy
signs ether transfers of at most 1 ETH to its allowlisted destinations at once and parks
larger ones for two treasury approvals; ERC-20 transfers are allowed only for the token a
policy names (a deployed test token needs a governance version whose policy lists its
address, as tests/payments/evm/test_e2e.py installs).

Imports: ``custody`` only (its kind decoder and assembler, its SDK models); never ``api``,
``signer_nodes`` or ``mpc``.
"""

from payments.evm.chain import (
    Chain,
    ChainError,
    ChainUnavailable,
    EthTesterChain,
    JsonRpcChain,
    Receipt,
    TxRejected,
)
from payments.evm.nonces import NonceError, NonceState
from payments.evm.rail import Confirmation, Erc20Transfer, EvmRail, erc20_transfers
from payments.evm.token import deploy_test_token, give_tokens, token_balance
from payments.evm.tx import BuildError, Fees, UnsignedTx, assemble

__all__ = [
    "BuildError",
    "Chain",
    "ChainError",
    "ChainUnavailable",
    "Confirmation",
    "Erc20Transfer",
    "EthTesterChain",
    "EvmRail",
    "Fees",
    "JsonRpcChain",
    "NonceError",
    "NonceState",
    "Receipt",
    "TxRejected",
    "UnsignedTx",
    "assemble",
    "deploy_test_token",
    "erc20_transfers",
    "give_tokens",
    "token_balance",
]
