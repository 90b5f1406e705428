"""Seal-key rotation: crash at every step leaves a consistent, fully readable node; rotation
under concurrent signing; the CLI refuses to rotate a running node."""

from __future__ import annotations

import json
import threading

import pytest
from nacl.signing import VerifyKey

from custody.signing import message_to_sign
from tests.nodes.conftest import (
    Coordinator,
    InProc,
    NodeRefused,
    cli,
    public_package,
    slow_short,
)

STEPS = ["rotate:1", "rotate:2", "rotate:3a", "rotate:3", "rotate:4a", "rotate:4", "rotate:5"]
#: The short form (CUSTODY_SLOW_SHORT=1, CI): one crash point in each of the five steps
#: (signer_nodes/rotation.py), the two inside a step (3a: half the rows rewrapped, not
#: committed; 4a: the new file written, not renamed) for steps 3 and 4.
SHORT_STEPS = ["rotate:1", "rotate:2", "rotate:3a", "rotate:4a", "rotate:5"]


def _status(node) -> dict:  # noqa: ANN001
    r = cli("status", "--data-dir", str(node.data_dir), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_crash_at_each_rotation_step_recovers(cluster: Coordinator) -> None:
    """Every crash point (the full form), or one in each step (:data:`SHORT_STEPS`)."""
    res = cluster.dkg("ed25519", "k1", 2, [1, 2, 3])
    pub = public_package(res, "ed25519")
    n1 = cluster.nodes[1]
    version = 1
    for i, step in enumerate(SHORT_STEPS if slow_short() else STEPS):
        # an outstanding nonce lives in memory only: a restart discards it (issue 9)
        spare = cluster.commitments(1, "k1", 1)[0]
        n1.stop()
        busy = cli("rotate-seal-key", "--data-dir", str(n1.data_dir), crash_at=step)
        assert busy.returncode == 137, (step, busy.stderr)
        if step == "rotate:3a":  # read-only status while the rotation is pending
            pend = _status(n1)
            assert pend["keys"] == 1 and pend["rotation_pending"]["step"] == "key-created"
        n1.start()  # recovery finishes the rotation forward at open
        st = cluster.call(n1, "GET", "/v1/status")
        assert st["keys"] == 1 and st["hsm"] == "ok"
        # crash before the new key exists: nothing to finish; after: finished forward
        assert st["seal_key_version"] == (version if step == "rotate:1" else version + 1)
        assert st["seal_key_versions"] == [st["seal_key_version"]]
        assert st["rotation_pending"] is None
        version = st["seal_key_version"]
        req = {"id": f"after-{i}", "key_id": "k1", "kind": "raw", "message": step.encode().hex()}
        with pytest.raises(NodeRefused) as gone:
            cluster.frost_sign(
                "ed25519", "k1", [1, 2], req, pub, {1: spare, 2: cluster.commitments(2, "k1")[0]}
            )
        assert gone.value.problem["type"] == "urn:tpwc:node:unknown-nonce"
        nonces = {p: cluster.commitments(p, "k1", 1)[0] for p in (1, 2)}
        sig = cluster.frost_sign("ed25519", "k1", [1, 2], req, pub, nonces)
        VerifyKey(bytes.fromhex(res["public_key"])).verify(message_to_sign("ed25519", req), sig)
    # a clean rotation of a running node's data dir is refused (directory lock)
    r = cli("rotate-seal-key", "--data-dir", str(n1.data_dir))
    assert r.returncode == 2 and "in use" in r.stderr
    n1.stop()
    r = cli("rotate-seal-key", "--data-dir", str(n1.data_dir))
    assert r.returncode == 0, r.stderr
    assert _status(n1)["seal_key_version"] == version + 1


def test_rotation_under_concurrent_signing(inproc: InProc) -> None:
    res = inproc.dkg("ed25519", "k1")
    pub = public_package(res, "ed25519")
    node = inproc.nodes[1]
    node.frost_commitments("k1", 20)
    stop = threading.Event()
    errors: list[BaseException] = []
    done: list[int] = []

    def signer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            req = {"id": f"c{i}", "key_id": "k1", "kind": "raw", "message": f"{i:04x}"}
            try:
                sig = inproc.frost_sign("ed25519", "k1", [1, 2], req, pub)
                VerifyKey(bytes.fromhex(res["public_key"])).verify(
                    message_to_sign("ed25519", req), sig
                )
                done.append(i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=signer) for _ in range(2)]
    for t in threads:
        t.start()
    versions = []
    for _ in range(3):
        versions.append(node.rotate_seal_key()["version"])
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(done) >= 2
    assert versions == sorted(versions) and node.vault.versions() == [versions[-1]]
    # every sealed item is readable under the surviving key
    with node.store.read() as c:
        assert {v for (v,) in c.execute("SELECT seal_version FROM keys")} == {versions[-1]}
        left = c.execute(
            "SELECT count(*) FROM ledger WHERE used = 0 AND seal_version != ?", (versions[-1],)
        ).fetchone()[0]
    assert left == 0
    node.frost_commitments("k1", 1)
    assert inproc.frost_sign(
        "ed25519", "k1", [1, 3], {"id": "z", "key_id": "k1", "kind": "raw", "message": "01"}, pub
    )
