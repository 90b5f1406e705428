"""The embedded payment core: a service of its own (``python -m payments``) that reaches
custody only through the SDK (:mod:`custody.client`) over HTTP.

May import: ``custody`` only (``tests/core/test_layering.py``).

=============  ==========================================================================
module         job
=============  ==========================================================================
``settings``   every setting, ``PAYMENTS_*`` (pydantic-settings)
``db``         the schema (SQLAlchemy Core, SQLite or PostgreSQL), the engine
``events``     the append-only event store (per-stream ``seq``, optimistic concurrency)
``ledger``     double-entry accounts, balanced postings, holds; overdrafts refused by a
               database ``CHECK``
``lifecycle``  the payment state machine: one transition table, the read-model projection
``replay``     read models rebuilt from the events, compared with the tables
``sanctions``  screening from a list in the OFAC SDN CSV layout
``risk``       limits and the risk score (velocity, new destination, z-score)
``rails``      the :class:`~payments.rails.Rail` protocol every rail implements
``book``       the internal book-transfer rail (Ed25519 ``message`` signed through custody)
``core``       the commands (accounts, deposits, payments, settlement windows), one
               transaction each
``worker``     drives authorized payments through custody and their rail, crash-resumable
``intake``     the pain.001 batch parser: each transaction mapped onto this ledger
``settlement`` the ``iso20022`` rail: netting per counterparty bank into signed pacs.008
``chains``     what the chain rails share: builds stored per payment, the release rule
``evm_rail``   the ``ethereum`` rail (ether and ERC-20 over :mod:`payments.evm`)
``btc_rail``   the ``bitcoin`` rail (BIP-86 PSBTs over :mod:`payments.btc`)
``reconcile``  ledger against rail records and settlement confirmations: breaks
``app``        the HTTP API (FastAPI)
``service``    composition from the settings; ``__main__`` runs it under uvicorn
=============  ==========================================================================

The chain rails ``payments/evm`` and ``payments/btc`` are registered in
:func:`payments.service.build` through ``evm_rail`` and ``btc_rail`` (``PAYMENTS_EVM_*``,
``PAYMENTS_BTC_*``); ``payments/iso20022`` is the intake and settlement format, used by
``intake`` and ``settlement``.
"""
