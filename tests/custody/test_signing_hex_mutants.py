"""custody.signing's raw-message hex: one string for one message (issue 16, found while
writing mutation killers). ``re.match`` with ``$`` also matched before a final newline, and
``bytes.fromhex`` skips whitespace, so ``"00\\n"`` signed the same message as ``"00"``."""

from __future__ import annotations

import pytest

from custody.signing import SignRequestError, message_to_sign


@pytest.mark.parametrize("scheme", ["ed25519", "bip340"])
def test_raw_hex_with_a_trailing_newline_or_space_is_refused(scheme: str) -> None:
    r = {"id": "r1", "key_id": "k1", "kind": "raw", "message": "00ff"}
    assert message_to_sign(scheme, r) == b"\x00\xff"
    for bad in ("00ff\n", "00ff ", " 00ff", "00\nff", "00ff\r\n"):
        with pytest.raises(SignRequestError, match="lower-case hex") as exc:
            message_to_sign(scheme, {**r, "message": bad})
        assert exc.value.field == "message"
