"""The Bitcoin rail of the payment core: PSBTs custody signs as ``btc-psbt``.

* :mod:`payments.btc.fees`: exact sizes of BIP-86 key-path spends, fee rates, dust;
* :mod:`payments.btc.selection`: coin selection (Bitcoin Core's, through btclib-wallet),
  change to the key's own BIP-86 address;
* :mod:`payments.btc.psbt`: the BIP-174 v0 PSBT custody decodes, and its finalization;
* :mod:`payments.btc.regtest`: an in-process regtest UTXO set whose mempool checks every
  input with Bitcoin Core's script interpreter (py-bitcoinkernel);
* :mod:`payments.btc.rail`: :class:`BitcoinRail`, the steps the payment service drives:
  prepare, sign (custody SDK), finalize, broadcast, status.

Imports ``custody`` only (its SDK, models and pure kind decoders).
"""

from payments.btc.fees import FeeRate, dust_threshold, tx_vsize, tx_weight
from payments.btc.psbt import (
    PsbtError,
    SignedPayment,
    UnsignedPayment,
    build_psbt,
    finalize_psbt,
    payment_from_psbt,
)
from payments.btc.rail import BitcoinRail, Payment, RailError
from payments.btc.regtest import (
    Accepted,
    BitcoinChain,
    Block,
    Coin,
    Regtest,
    Rejected,
    TxStatus,
    UtxoSet,
)
from payments.btc.selection import (
    DustOutput,
    InsufficientFunds,
    Selection,
    SelectionError,
    TxOut,
    Utxo,
    select_coins,
)
from payments.btc.tx import AddressError, output_script, parse_tx

__all__ = [
    "Accepted",
    "AddressError",
    "BitcoinChain",
    "BitcoinRail",
    "Block",
    "Coin",
    "DustOutput",
    "FeeRate",
    "InsufficientFunds",
    "Payment",
    "PsbtError",
    "RailError",
    "Regtest",
    "Rejected",
    "Selection",
    "SelectionError",
    "SignedPayment",
    "TxOut",
    "TxStatus",
    "UnsignedPayment",
    "Utxo",
    "UtxoSet",
    "build_psbt",
    "dust_threshold",
    "finalize_psbt",
    "output_script",
    "parse_tx",
    "payment_from_psbt",
    "select_coins",
    "tx_vsize",
    "tx_weight",
]
