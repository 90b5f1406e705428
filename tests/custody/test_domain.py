"""custody.domain: one definition of each domain value, and nobody in api/ or custody/
spells one out again."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from custody import domain
from custody.models import KeyCreate, SignRequestCreate
from custody.signing import SignRequestError, message_to_sign

ROOT = Path(__file__).resolve().parents[2]


def test_scheme_specs_cover_every_scheme_and_name_their_suite() -> None:
    assert set(domain.SCHEME_SPECS) == set(domain.SCHEMES)
    assert domain.FROST_SCHEMES == ("ed25519", "bip340")
    for name, s in domain.SCHEME_SPECS.items():
        assert s.name == name and s.signature_len == 64
        assert s.is_frost == (s.frost_suite is not None) == (not s.has_recovery_id)
    assert domain.spec("bip340").x_only_key and domain.spec("ecdsa-secp256k1").public_key_len == 33
    with pytest.raises(ValueError, match="unknown scheme"):
        domain.spec("rsa")


def test_statuses_and_roles() -> None:
    assert set(domain.TERMINAL_SIGN_STATUSES) < set(domain.SIGN_STATUSES)
    assert "pending_approval" not in domain.TERMINAL_SIGN_STATUSES
    assert set(domain.TERMINAL_KEY_STATUSES) == {"active", "failed"}
    assert domain.ROLES == ("admin", "requester", "approver", "auditor")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("k", True),
        ("key_" + "ab" * 16, True),
        ("a.b:c-d_e", True),
        ("x" * 40, True),
        ("x" * 41, False),
        ("", False),
        ("a b", False),
        ("abc\n", False),
        ("ключ", False),
        (7, False),
    ],
)
def test_one_id_rule_for_the_api_and_the_signing_rule(value: object, ok: bool) -> None:
    assert domain.is_valid_id(value) is ok
    req = {"id": value, "key_id": "k1", "kind": "raw", "message": "00" * 32}
    if ok:
        assert message_to_sign("ed25519", req) == bytes(32)
    else:
        with pytest.raises(SignRequestError) as e:
            message_to_sign("ed25519", req)
        assert e.value.field == "id"
    body = {"key_id": value, "kind": "raw", "message": "00"}
    if ok:
        assert SignRequestCreate.model_validate(body).key_id == value
    else:
        with pytest.raises(ValueError):
            SignRequestCreate.model_validate(body)


def test_new_ids_follow_the_rule() -> None:
    for prefix in ("key", "sr"):
        i = domain.new_id(prefix)
        assert i.startswith(prefix + "_") and domain.is_valid_id(i)
    assert domain.new_id("sr") != domain.new_id("sr")


def test_models_take_their_literals_from_the_domain() -> None:
    schema = KeyCreate.model_json_schema()
    assert schema["properties"]["scheme"]["enum"] == list(domain.SCHEMES)


def _literal_sets(path: Path) -> list[tuple[int, set[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            vals = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            out.append((node.lineno, {v for v in vals if isinstance(v, str)}))
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
            elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            vals = {e.value for e in elts if isinstance(e, ast.Constant)}
            out.append((node.lineno, {v for v in vals if isinstance(v, str)}))
    return out


def test_nothing_in_api_custody_or_the_node_redefines_a_domain_list() -> None:
    """A literal list of two or more schemes, sign statuses or roles outside
    custody/domain.py is a second definition."""
    families = {
        "schemes": set(domain.SCHEMES),
        "sign statuses": set(domain.SIGN_STATUSES) - {"failed"},
        "roles": set(domain.ROLES),
        "session statuses": set(domain.SESSION_STATUSES),
    }
    found = []
    for folder in ("api", "custody", "signer-nodes"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            if f.name == "domain.py" and f.parent.name == "custody":
                continue
            for line, vals in _literal_sets(f):
                for name, fam in families.items():
                    if len(vals & fam) >= 2:
                        found.append(f"{f.relative_to(ROOT)}:{line} {name}")
    assert found == []
