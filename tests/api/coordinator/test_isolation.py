"""DKLs23 blame by signer sets (api.coordinator.service._Isolation): a consistently bad
co-signer is named; one that misbehaves selectively to frame an honest partner gets
nobody named, only suspects."""

from __future__ import annotations

from api.coordinator.service import _Isolation


def test_a_consistently_bad_cosigner_is_named_after_two_failed_sets() -> None:
    iso = _Isolation()
    iso.failed_with((1, 2))
    assert iso.steer <= {1, 2} and iso.suspects(set()) == [1, 2]
    iso.succeeded_with([1, 3])
    assert iso.confirmed(set()) == []  # failed once: confirm with another partner first
    assert iso.confirming_set(2) == {2, 3}
    iso.failed_with((2, 3))
    assert [p for p, _ in iso.confirmed(set())] == [2]
    assert iso.suspects({2}) == []


def test_a_framing_cosigner_gets_nobody_named() -> None:
    iso = _Isolation()
    iso.failed_with((1, 2))  # node 2 spoils this one on purpose
    iso.succeeded_with([2, 3])  # and behaves here, to frame node 1
    assert iso.confirming_set(2) == {1, 3}
    iso.succeeded_with([1, 3])  # node 1 is honest: cleared
    assert iso.confirmed(set()) == [] and iso.confirming_set(2) is None
    assert iso.suspects(set()) == [1, 2]  # one of them spoiled it; nobody is named


def test_without_a_working_set_everyone_stays_a_suspect() -> None:
    iso = _Isolation()
    iso.failed_with((1, 2))
    iso.failed_with((2, 3))
    assert iso.confirmed(set()) == [] and iso.suspects(set()) == [1, 2, 3]
