"""The node's passkey counter table (issue 15): the last WebAuthn signature counter accepted
per credential, kept in the real SQLCipher store, surviving a close and reopen, recorded by
compare-and-set so two assertions racing on one counter cannot both be recorded."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from signer_nodes.store import SCHEMA_VERSION, NodeStore

CRED = b"\x01" * 16
A, B = b"\xaa" * 32, b"\xbb" * 32  # two assertions' digests


def _open(path: Path, key: bytes) -> NodeStore:
    store = NodeStore(path, key)
    store.migrate()
    return store


def test_counters_increase_survive_a_reopen_and_a_retry_is_not_stale(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = _open(tmp_path / "node.db", key)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.passkey_floor(CRED, A) == 0  # never seen
    assert store.record_passkey_counter(CRED, 5, A)
    assert store.passkey_floor(CRED, B) == 5  # another assertion must exceed 5
    assert store.passkey_floor(CRED, A) == 4  # the same one again: a retry
    assert store.record_passkey_counter(CRED, 5, A)  # the retry records again
    assert not store.record_passkey_counter(CRED, 5, B)  # a clone at the same counter
    assert not store.record_passkey_counter(CRED, 4, B)
    store.close()
    again = _open(tmp_path / "node.db", key)  # durable
    assert again.passkey_floor(CRED, B) == 5
    assert again.record_passkey_counter(CRED, 6, B)
    assert again.passkey_floor(CRED, A) == 6
    assert again.passkey_floor(b"\x02" * 16, A) == 0  # per credential
    again.close()


def test_an_authenticator_without_a_counter_always_records(tmp_path: Path) -> None:
    store = _open(tmp_path / "node.db", os.urandom(32))
    assert store.record_passkey_counter(CRED, 0, A)
    assert store.record_passkey_counter(CRED, 0, B)
    assert store.passkey_floor(CRED, B) == 0
    assert store.record_passkey_counter(CRED, 3, A)  # it starts counting: from then on, checked
    assert not store.record_passkey_counter(CRED, 0, B)
    store.close()


def test_two_assertions_racing_on_one_counter_record_once(tmp_path: Path) -> None:
    store = _open(tmp_path / "node.db", os.urandom(32))
    assert store.record_passkey_counter(CRED, 1, A)
    digests = [bytes([i]) * 32 for i in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(digests))

    def race(d: bytes) -> None:
        barrier.wait()
        results.append(store.record_passkey_counter(CRED, 2, d))

    threads = [threading.Thread(target=race, args=(d,)) for d in digests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    store.close()
