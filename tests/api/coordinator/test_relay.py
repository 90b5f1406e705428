"""api.coordinator.relay: the session relay drives mpc.relay over the node session API.

The nodes here are scripted in process (a toy one-round protocol behind the node API's
shape: ``POST /v1/sessions``, ``POST .../envelopes``, ``GET /v1/sessions/{id}``), so the
relay's routing, de-duplication, completion and blame are checked without a cluster
(tests/e2e runs the real protocols)."""

from __future__ import annotations

from typing import Any

import pytest

from api.coordinator import SessionFailed
from api.coordinator.registry import NodeRegistry
from api.coordinator.relay import SessionRelay
from api.nodes import NodeInfo

SID = "ab" * 32


class ToyNode:
    """Broadcasts ``hello from p`` when started; done once it heard every other party."""

    def __init__(self, party: int, parties: list[int], tamper: str | None = None) -> None:
        self.party = party
        self.parties = parties
        self.tamper = tamper
        self.heard: list[int] = []
        self.deliveries = 0

    def state(self) -> dict[str, Any]:
        env: dict[str, Any] = {"from": self.party, "to": None, "envelope": f"hello-{self.party}"}
        if self.tamper == "to-self":
            env["to"] = self.party
        elif self.tamper == "outsider":
            env["to"] = 99
        elif self.tamper == "spoof":
            env["from"] = self.party % len(self.parties) + 1
        done = sorted(self.heard) == sorted(set(self.parties) - {self.party})
        st: dict[str, Any] = {
            "session_id": SID,
            "status": "done" if done else "running",
            "envelopes": [env],  # the whole outbox, every time: the relay de-duplicates
            "waiting_for": sorted(set(self.parties) - {self.party} - set(self.heard)),
        }
        if self.tamper == "fail":
            st["status"] = "failed"
            st["error"] = {"detail": "bad share", "culprits": [self.parties[-1]]}
        if done:
            st["result"] = {"heard": sorted(self.heard)}
        return st


class ToyCaller:
    def __init__(self, nodes: dict[int, ToyNode]) -> None:
        self.nodes = nodes

    async def call(
        self, node: NodeInfo, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        toy = self.nodes[node.party_id]
        if method == "POST" and path.endswith("/envelopes"):
            assert body is not None
            toy.deliveries += 1
            for e in body["envelopes"]:
                assert e["to"] in (None, toy.party) and e["from"] != toy.party
                toy.heard.append(e["from"])
        return toy.state()


def _relay(parties: list[int], tamper: dict[int, str] | None = None) -> tuple[SessionRelay, Any]:
    toys = {p: ToyNode(p, parties, (tamper or {}).get(p)) for p in parties}
    registry = NodeRegistry(db=None, caller=ToyCaller(toys), governance=None)  # type: ignore[arg-type]
    infos = [NodeInfo(f"node-{p}", p, f"http://n{p}", "", "", status="healthy") for p in parties]
    registry.nodes = {n.id: n for n in infos}
    return SessionRelay(registry, round_timeout=2.0), (infos, toys)


async def test_broadcasts_reach_every_other_party_once() -> None:
    relay, (infos, toys) = _relay([1, 2, 3])
    results = await relay.run(infos, {"session_id": SID})
    assert results == {1: {"heard": [2, 3]}, 2: {"heard": [1, 3]}, 3: {"heard": [1, 2]}}
    assert all(t.deliveries == 1 for t in toys.values())  # one batch each, no repeats


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("to-self", "garbage: envelope recipient"),
        ("outsider", "garbage: envelope recipient"),
        ("spoof", "garbage: envelope header"),
    ],
)
async def test_a_misrouted_envelope_blames_its_sender(tamper: str, reason: str) -> None:
    relay, (infos, _) = _relay([1, 2, 3], {2: tamper})
    with pytest.raises(SessionFailed) as e:
        await relay.run(infos, {"session_id": SID})
    assert e.value.blame == [(2, reason)]


async def test_a_reported_failure_blames_the_culprits_it_names() -> None:
    relay, (infos, _) = _relay([1, 2, 3], {1: "fail"})
    with pytest.raises(SessionFailed) as e:
        await relay.run(infos, {"session_id": SID})
    assert e.value.blame == [(3, "reported by party 1: bad share")]
