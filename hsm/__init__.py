"""HSM access for TP Wallet Custody: PKCS#11 sessions, seal/unseal, dev token provisioning.

Signer nodes seal their key shares (and the SQLCipher database key) with a
non-extractable AES-256 key that lives in a PKCS#11 token -- SoftHSM2 in dev and tests,
a hardware HSM in production. Sealing is AES-256-GCM performed *inside* the token
(``CKM_AES_GCM``, PKCS#11 Current Mechanisms v2.40/v3.0; GCM per NIST SP 800-38D) with a
fresh 96-bit random nonce and a 128-bit tag, and an AAD that binds purpose, key id, node
id and share version (:func:`seal_aad`). The token also keeps non-extractable Ed25519
signing keys (the coordinator's identity).

May import: nothing of ours (only python-pkcs11 and the standard library).

Quick use::

    from hsm import Hsm, HsmConfig, seal_aad

    with Hsm.open(HsmConfig(token_label="node-1", pin=pin)) as hsm:
        aad = seal_aad(key_id, node_id, share_version)
        blob = hsm.seal(share_bytes, aad)      # b"TPS1" || u32 ver || nonce || ct || tag
        share_bytes = hsm.unseal(blob, aad)    # UnsealError(reason=...) if anything is off

Public API: :class:`Hsm`, :class:`HsmConfig`, :func:`provision_dev_token`,
:func:`seal_aad`, :func:`softhsm_env`, :func:`sealed_key_version`,
:func:`resolve_module_path`, and the errors :class:`HsmError`, :class:`HsmModuleMissing`
(exit 20), :class:`HsmTokenMissing` (21), :class:`HsmWrongPin` (22),
:class:`HsmUnavailable` (23), :class:`UnsealError` (24), :class:`HsmConfigConflict` (25),
:class:`SealKeyMissing` (26).

Environment
-----------
``CUSTODY_PKCS11_MODULE``
    Path of the PKCS#11 module when :attr:`HsmConfig.module_path` is ``None``; otherwise
    the standard SoftHSM2 locations are searched (Debian: ``/usr/lib/softhsm/libsofthsm2.so``).
``SOFTHSM2_CONF``
    Read by SoftHSM2 *once*, inside ``C_Initialize``. :meth:`Hsm.open` sets it from
    :attr:`HsmConfig.softhsm_conf` just before the first ``C_Initialize`` of the process
    (and leaves it set, so subprocesses inherit the same config).

One SoftHSM2 config per process (the constraint)
------------------------------------------------
A PKCS#11 module is one library instance per process: ``dlopen`` returns the same
instance for the same file, python-pkcs11 caches it per path, and SoftHSM2 reads
``SOFTHSM2_CONF`` only at ``C_Initialize``. Hence the **first** :meth:`Hsm.open` (or
in-process provisioning) *binds* the process to one config, i.e. one token directory,
until exit. Consequences:

* A node process has exactly one token: nothing to do.
* Opening a config naming a *different* SoftHSM2 config file in the same process raises
  :class:`HsmConfigConflict` (never a silent switch to the wrong tokens).
  ``softhsm_conf=None`` means "use whatever is bound".
* Many tokens in one process work when they share the bound token directory and are
  selected by label. :func:`provision_dev_token` does this automatically: once the
  process is bound to a dev config, new dev tokens are added to *that* directory (the
  returned config says so), whatever ``token_dir`` was passed. Before binding, each token
  gets its own ``token_dir`` (provisioned by a child process, leaving this one unbound)
  -- what a launcher that starts one node subprocess per token wants.
* Tests: bind once per session to a dedicated directory that no test deletes (see
  ``tests/hsm/conftest.py``); a test that deletes a whole token directory must run in a
  subprocess. Deleting one token's own subdirectory only breaks that token: lookups skip
  broken slots.
* To hand a token to a subprocess: ``env={**os.environ, **softhsm_env(config)}``, and
  pass the PIN over a pipe, never argv.
* ``C_Finalize`` by anyone in the process ends every session of every :class:`Hsm`;
  each recovers on its next call (reconnect), re-initialising with the bound config.
* Do not share an open :class:`Hsm` across ``fork()``; open it in the child.

Concurrency: python-pkcs11 initialises the module with ``C_Initialize(NULL)``, which per
PKCS#11 tells the library it will not be called concurrently (SoftHSM2 then runs without
its own mutexes). All PKCS#11 calls of this package therefore take one process-wide
lock: :class:`Hsm` is safe to call from many threads, and calls are serialised.

Login state is per application and token in PKCS#11, so several :class:`Hsm` objects on
the *same* token in one process share one login; the PIN of each later opener is checked
against (a keyed digest of) the PIN that logged in, and no one calls ``C_Logout``.

Secrets: PINs are never logged, put in messages, reprs, argv or files; seal keys are
generated on the token with ``CKA_SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE`` and never leave
it; plaintexts exist only in memory of the caller.
"""

from __future__ import annotations

from hsm.blob import SealedHeader, parse_sealed_header, seal_aad, sealed_key_version
from hsm.config import HsmConfig, resolve_module_path, softhsm_env
from hsm.errors import (
    HsmConfigConflict,
    HsmError,
    HsmModuleMissing,
    HsmTokenMissing,
    HsmUnavailable,
    HsmWrongPin,
    SealKeyMissing,
    UnsealError,
)
from hsm.provision import provision_dev_token
from hsm.session import Hsm, seal_key_label

__all__ = [
    "Hsm",
    "HsmConfig",
    "HsmConfigConflict",
    "HsmError",
    "HsmModuleMissing",
    "HsmTokenMissing",
    "HsmUnavailable",
    "HsmWrongPin",
    "SealKeyMissing",
    "SealedHeader",
    "UnsealError",
    "parse_sealed_header",
    "provision_dev_token",
    "resolve_module_path",
    "seal_aad",
    "seal_key_label",
    "sealed_key_version",
    "softhsm_env",
]
