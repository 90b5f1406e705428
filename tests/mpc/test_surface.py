"""The public surface of mpc: dangerous names live only in mpc.hazmat and mpc.testing."""

from __future__ import annotations

import importlib

import pytest

from mpc import dkg, dkls23, frost, hazmat, testing

MOVED = {
    (frost, "nonce_generate"): hazmat,
    (frost, "encode_group_commitment_list"): hazmat,
    (frost, "compute_binding_factors"): hazmat,
    (frost, "compute_group_commitment"): hazmat,
    (frost, "compute_challenge"): hazmat,
    (dkg, "pok_challenge"): hazmat,
    (dkg, "prove_knowledge"): hazmat,
    (dkg, "verify_knowledge"): hazmat,
    (dkg, "verify_knowledge_generic"): hazmat,
    (dkg, "round1_payload"): hazmat,
    (dkg, "echo_digest"): hazmat,
    (dkg, "evaluate_in_exponent"): hazmat,
    (dkg, "run_dkg_local"): testing,
    (dkls23, "run_keygen_local"): testing,
    (dkls23, "run_ot_setup_local"): testing,
    (dkls23, "MemoryLedger"): testing,
}


@pytest.mark.parametrize(("old", "name"), sorted(MOVED, key=lambda k: (k[0].__name__, k[1])))
def test_dangerous_name_moved(old: object, name: str) -> None:
    new = MOVED[(old, name)]  # type: ignore[index]
    assert not hasattr(old, name), f"{old.__name__}.{name} is still public"
    assert name in new.__all__ and callable(getattr(new, name))


def test_mpc_local_is_gone() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mpc.local")


@pytest.mark.parametrize("module", [hazmat, testing], ids=lambda m: m.__name__)
def test_module_opens_with_a_danger_warning(module: object) -> None:
    doc = module.__doc__ or ""
    assert ".. danger::" in doc.split("\n\n", 2)[1]
    assert "land mines, dragons, and dinosaurs with laser guns" in " ".join(doc.split())


def test_top_level_all_lists_only_existing_names() -> None:
    for module in (frost, dkls23, dkg, hazmat, testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


def test_set_rng_only_before_start_and_reproducible() -> None:
    from mpc.dkg import DkgSession
    from mpc.errors import UsageError
    from mpc.groups import ED25519

    def run(seed: bytes) -> list[bytes]:
        s = {i: DkgSession(ED25519, bytes(32), i, [1, 2, 3], 2) for i in (1, 2, 3)}
        for i in s:
            hazmat.set_rng(s[i], testing.seeded_rng(seed + bytes([i])))
        keys = testing.run_local(s)
        return [ED25519.encode_scalar(keys[i].signing_share) for i in (1, 2, 3)]

    assert run(b"a") == run(b"a") != run(b"b")
    s = DkgSession(ED25519, bytes(32), 1, [1, 2], 2)
    s.start()
    with pytest.raises(UsageError, match="after start"):
        hazmat.set_rng(s, testing.seeded_rng(b"late"))


def test_seeded_rng_is_a_stream() -> None:
    a, b = testing.seeded_rng(b"s"), testing.seeded_rng(b"s")
    assert a(10) + a(100) == b(110)
    assert len(a(0)) == 0 and testing.seeded_rng(b"t")(32) != testing.seeded_rng(b"s")(32)
