"""The signer-node service (``signer_nodes``): one node's sealed shares, its protocol
sessions and its write-ahead signing pipeline, served over HTTP (docs/NODE_API.md).

May import: ``mpc``, ``hsm``, ``custody`` (and third-party libraries); never ``api``.

One job per module; after the colon, what it may import of this package (checked by
``tests/nodes/test_structure.py``)::

    errors     domain errors (a Kind, a detail, culprits; no HTTP): -
    faults     fault hooks passed in (NO_FAULTS in production): -
    config     data-directory layout, node.json, the PIN source: -
    logs       structured JSON logs (custody.obs, one schema), secret-looking fields
               dropped: -
    metrics    Prometheus metrics (no ids, no secrets): -
    policy     the authorization seam (invariant 2: coordinator, message, policy,
               approvals, velocity; pure): -
    envelope   signed and boxed envelopes around protocol messages: -
    store      the SQLCipher database, group commit, sealing lock: -
    pool       single-use secrets (nonces, presignatures), in memory only: errors
    vault      the node's view of its HSM, the sealed DB key file: config
    rotation   seal-key rotation and its recovery: faults logs store vault
    identity   identity keys, peers, envelopes: envelope store vault
    anchor     the governance trust anchor (roster, committees, raw keys):
               envelope errors logs store
    checkpoint release log view, node-cosigned audit checkpoints:
               anchor errors logs store (and custody.auditchain: the pure encodings
               of release/audit entries, request digest, statements, shared with the
               coordinator)
    velocity   the node's own release history for velocity windows: store
    shares     sealed shares, in-memory items, retired OT pairs: errors logs pool store vault
    specs      typed session specs, body field parsers: errors shares
    ecdsa      DKLs23 key-setup and presign sessions: errors shares specs
    protocols  the protocol object a spec runs, what is kept of it: ecdsa errors shares specs
    ceremonies refresh sessions on an existing key, the pending share beside the active
               one, commit when every party signed done: anchor ecdsa errors faults
               logs protocols shares specs vault
    sessions   the session host: anchor envelope errors identity logs protocols specs
               store
    taproot    btc-psbt items: the input's sighash, the BIP-86 output-key share: errors
    pipeline   THE write-ahead signing pipeline, FROST and ECDSA strategies:
               anchor ecdsa errors faults logs policy pool protocols shares specs
               store taproot velocity (and custody.auditchain, custody.receipts)
    node       provisioning, the directory lock, the composition: all of the above
    service    HTTP, the only map from error kinds to HTTP: envelope errors logs metrics
               node pipeline specs
    backup     share backups to offline age recipients, restore onto a fresh node:
               errors logs node protocols (and custody.backups: the format)
    cli        python -m signer_nodes ...: backup config errors logs node store (service,
               lazily)
"""
