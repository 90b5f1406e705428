"""Velocity under concurrency (in-process nodes, real SoftHSM2 and SQLCipher): requests
racing for the room left in a window cannot both get it. Each allowed request is reserved
in the node's window while it is decided (signer_nodes.velocity), so of concurrent
requests that together exceed the limit, the node releases only what fits."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import rlp

from custody import governance as gov
from custody import policy as pol
from signer_nodes.errors import NodeError
from tests.nodes.conftest import INITIATOR, InProc

LIMIT = 1500


def _tx(value: int, nonce: int) -> str:
    fields = [1, nonce, 1, 2, 21_000, bytes.fromhex("a1" * 20), value, b"", []]
    return "0x02" + rlp.encode(fields).hex()


def _presign(inproc: InProc, key_id: str) -> str:
    spec = {
        "session_id": secrets.token_hex(32),
        "kind": "ecdsa-presign",
        "key_id": key_id,
        "scheme": "ecdsa-secp256k1",
        "threshold": 2,
        "participants": [1, 2],
    }
    inproc.run_session(spec)
    state = inproc.nodes[1].session_state(spec["session_id"])
    assert state["status"] == "done", state
    return str(state["result"]["presignature_id"])


def test_concurrent_requests_do_not_both_spend_the_window(inproc: InProc) -> None:
    inproc.dkg("ecdsa-secp256k1", "vk")
    body = gov.decode(inproc.genesis).body.successor(
        policy=pol.Policy(
            rules=(
                pol.Rule(
                    "capped",
                    "allow",
                    kinds=frozenset({"evm-tx"}),
                    assets=frozenset({"ETH"}),
                    velocity=(pol.Velocity("key", 3600, LIMIT),),
                ),
            )
        )
    )
    doc = inproc.officers.sign(body)
    for nd in inproc.nodes.values():
        nd.install_governance(doc)
    node = inproc.nodes[1]
    racers = 6
    pres = [_presign(inproc, "vk") for _ in range(racers)]
    barrier = threading.Barrier(racers)
    outcomes: list[Any] = [None] * racers

    def race(i: int) -> None:
        request = {
            "id": f"sr-{i}",
            "key_id": "vk",
            "kind": "evm-tx",
            "payload": {"tx": _tx(1000, i)},
            "initiator": INITIATOR,
        }
        barrier.wait()
        try:
            outcomes[i] = node.ecdsa_sign("vk", pres[i], request, coordinator_verified=True)
        except NodeError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=race, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    signed = [o for o in outcomes if isinstance(o, bytes)]
    refused = [o for o in outcomes if isinstance(o, NodeError)]
    assert len(signed) == 1 and len(refused) == racers - 1, outcomes
    assert {e.code for e in refused} == {"policy-denied"}
    assert node.status()["release_head"] == 1  # one release-log entry: what was released
