"""Custody domain and client side.

``custody.domain`` (schemes, kinds, statuses, roles, id rules), ``custody.models`` (the
public API models), ``custody.signing`` (the message each scheme signs), the SDK
(``custody.client``), the ``custody`` CLI (``custody.cli``; what its command modules share,
``custody.cli_support``; its exit codes, ``custody.exitcodes``) and the local dev cluster;
governance documents (``custody.governance``) and the HTTP guards both services run under
(``custody.serving``).

May import: ``mpc`` (``custody.signing`` uses its canonical CBOR), never ``api`` or
``signer_nodes``.
"""
