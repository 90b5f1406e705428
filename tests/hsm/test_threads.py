"""Thread safety: many threads sealing/unsealing through one and several Hsm objects."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from hsm import Hsm, HsmConfig, _backend, provision_dev_token, seal_aad, sealed_key_version
from tests.hsm.conftest import SO_PIN, USER_PIN, unique_label


def _run_threads(workers: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def wrap(worker: Callable[[], None]) -> None:
        start.wait()
        try:
            worker()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_concurrent_seal_unseal_rotation_and_sabotage(
    hsm_config: HsmConfig, tmp_path: Path
) -> None:
    other_config = provision_dev_token(tmp_path, unique_label(), USER_PIN, SO_PIN)
    shared = Hsm.open(hsm_config)
    same_token = Hsm.open(hsm_config)  # second object on the same token (shared login)
    other_token = Hsm.open(other_config)
    shared.current_seal_version()
    rounds = 40

    def sealer(handle: Hsm, index: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(rounds):
                aad = seal_aad(f"key-{index}", "node", i)
                plaintext = os.urandom(1 + (i * 7 + index) % 100)
                blob = handle.seal(plaintext, aad)
                assert handle.unseal(blob, aad) == plaintext
                assert len(handle.random(16)) == 16

        return work

    created: list[int] = []

    def rotator() -> None:
        for _ in range(3):
            created.append(shared.create_seal_key())

    def saboteur() -> None:
        for _ in range(5):
            with _backend.LOCK:  # close the live session behind the objects' backs
                if shared._session is not None:
                    shared._session.close()
            threading.Event().wait(0.005)

    workers: list[Callable[[], None]] = [sealer(shared, i) for i in range(6)]
    workers += [sealer(same_token, 10 + i) for i in range(2)]
    workers += [sealer(other_token, 20 + i) for i in range(2)]
    workers += [rotator, saboteur]
    errors = _run_threads(workers)
    assert errors == []

    assert sorted(created) == [2, 3, 4]
    assert shared.seal_key_versions() == [1, 2, 3, 4]
    assert sealed_key_version(same_token.seal(b"x", b"")) == 4
    assert other_token.seal_key_versions() == [1]
    for handle in (shared, same_token, other_token):
        handle.close()


def test_concurrent_open_close_on_one_token(hsm_config: HsmConfig) -> None:
    blob = None
    with Hsm.open(hsm_config) as first:
        blob = first.seal(b"shared", b"aad")

    def opener() -> None:
        for _ in range(15):
            with Hsm.open(hsm_config) as handle:
                assert handle.unseal(blob, b"aad") == b"shared"

    assert _run_threads([opener for _ in range(6)]) == []
