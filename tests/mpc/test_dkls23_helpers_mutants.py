"""DKLs23 helpers: params' hashes, _zq's packed Z_q vectors, _bits' bit matrices and GF(2^128)
check hash, each against a plain independent computation (issue 16, mutation testing).

Pure and fast: no key, no session. First in ``mutation.toml``'s selections for
``mpc/dkls23/params.py``, ``_zq.py`` and ``_bits.py``.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from gmpy2 import mpz

from mpc.dkls23 import _bits, _zq
from mpc.dkls23.params import (
    COL_BYTES,
    ELL,
    ETA,
    GADGET_LABEL,
    GROUP,
    KAPPA,
    LAMBDA_C,
    WIDTH,
    XI,
    Q,
    S,
    gadget,
    h,
    h_scalars,
)
from mpc.groups import SECP256K1

# SEC 2 (version 2), section 2.4.1: the order n of secp256k1's base point, written out
SEC2_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# -- params --------------------------------------------------------------------------------


def test_parameters_are_the_documented_ones() -> None:
    assert (KAPPA, S, LAMBDA_C, ELL) == (256, 128, 128, 2)
    assert XI == 896 and ETA == 1024 and WIDTH == 4 and COL_BYTES == 128
    assert Q == SEC2_N and GROUP is SECP256K1


def _h(label: bytes, *parts: bytes | int) -> bytes:
    """params.h from its docstring: 2-byte label length, 4-byte part lengths, ints as 8 bytes."""
    out = len(label).to_bytes(2, "big") + label
    for p in parts:
        b = p.to_bytes(8, "big") if isinstance(p, int) else p
        out += len(b).to_bytes(4, "big") + b
    return hashlib.sha256(out).digest()


def test_h_is_length_prefixed_sha256() -> None:
    assert h(b"") == hashlib.sha256(b"\x00\x00").digest()
    assert h(b"lbl", b"ab", 7, b"") == _h(b"lbl", b"ab", 7, b"")
    manual = b"\x00\x03lbl" + b"\x00\x00\x00\x08" + (2**40 + 3).to_bytes(8, "big")
    assert h(b"lbl", 2**40 + 3) == hashlib.sha256(manual).digest()
    # the prefixes make the split unambiguous
    assert h(b"l", b"ab", b"c") != h(b"l", b"a", b"bc") != h(b"la", b"bc")


def test_h_scalars_are_48_byte_shake_blocks_reduced_mod_q() -> None:
    seed = _h(b"x", b"y", 3)
    stream = hashlib.shake_256(seed).digest(48 * 5)
    want = [int.from_bytes(stream[48 * i : 48 * i + 48], "big") % SEC2_N for i in range(5)]
    assert h_scalars(b"x", 5, b"y", 3) == want
    assert h_scalars(b"x", 0, b"y", 3) == []
    assert h_scalars(b"x", 2, b"y", 3) == want[:2]


def test_gadget_is_h_scalars_under_its_label() -> None:
    ctx = bytes(range(40))
    g = gadget(ctx)
    assert len(g) == XI and g == tuple(h_scalars(GADGET_LABEL, XI, ctx))
    assert GADGET_LABEL == b"DKLs23 gadget vector g from mul_ctx v1"
    stream = hashlib.shake_256(_h(GADGET_LABEL, ctx)).digest(48 * XI)
    assert g[-1] == int.from_bytes(stream[-48:], "big") % SEC2_N


# -- _zq -------------------------------------------------------------------------------------


def _pack(xs: list[int]) -> mpz:
    return mpz.from_bytes(b"".join(x.to_bytes(128, "big") for x in xs), "big")


def _slots(v: mpz) -> list[int]:
    raw = v.to_bytes(128 * XI, "big")
    return [int.from_bytes(raw[128 * j : 128 * j + 128], "big") for j in range(XI)]


def test_zq_constants() -> None:
    assert _zq.SLOT == 1024 and _zq.C == 2**256 - SEC2_N
    assert _slots(_zq.ONES) == [1] * XI
    assert _slots(_zq.LO) == [2**256 - 1] * XI
    assert _slots(_zq.Q_REP) == [SEC2_N] * XI and _slots(_zq.Q2_REP) == [2 * SEC2_N] * XI
    assert _slots(_zq.rep(12345)) == [12345] * XI


@pytest.mark.parametrize("bits", [256, 257, 300, 382, 383, 384, 385, 386, 387, 400, 512, 513, 640])
def test_reduce_matches_python_modulo_at_every_width(bits: int) -> None:
    rnd = random.Random(bits)
    edge = [0, 1, SEC2_N - 1, SEC2_N, SEC2_N + 1, 2 * SEC2_N - 1, 2 * SEC2_N, 2**256 - 1]
    edge += [(1 << bits) - 1, (1 << bits) - SEC2_N, 1 << (bits - 1)]
    xs = [e for e in edge if e < 1 << bits]
    xs += [rnd.getrandbits(bits) for _ in range(XI - len(xs))]
    # values just below 2^bits that leave a fold result near 2q
    for k in range(40):
        xs[len(edge) + k] = (1 << bits) - 1 - k
    assert _slots(_zq.reduce(_pack(xs), bits)) == [x % SEC2_N for x in xs]


def test_reduce_of_the_worst_case_products() -> None:
    """Sums of products of two canonical scalars (what the multiplication reduces)."""
    top = SEC2_N - 1
    for bits, x in ((512, top * top), (513, 2 * top * top), (514, 3 * top * top)):
        assert x < 1 << bits
        assert _slots(_zq.reduce(_pack([x] * XI), bits)) == [x % SEC2_N] * XI


def test_unpack_streams_join_and_to_bytes() -> None:
    rnd = random.Random(5)
    vals = [rnd.getrandbits(256) for _ in range(4 * XI)]
    buf = b"".join(v.to_bytes(32, "big") for v in vals)
    vecs = _zq.streams(buf)
    assert len(vecs) == 4
    for i in range(4):
        assert _slots(vecs[i]) == vals[i::4]
        assert _zq.unpack(buf, 4, i) == vals[i::4]
    assert _zq.unpack(buf, 1, 0) == vals and _zq.unpack(buf, 2, 1) == vals[1::2]
    assert _zq.join(vecs) == buf
    assert _zq.to_bytes(vecs[0]) == b"".join(v.to_bytes(128, "big") for v in vals[0::4])
    with pytest.raises(AssertionError):
        _zq.streams(buf[:-32])
    with pytest.raises(AssertionError):
        _zq.join(vecs[:3])


def test_below_q_at_the_boundary() -> None:
    for bad in (SEC2_N, SEC2_N + 1, 2**256 - 1):
        for slot in (0, XI - 1):
            xs = [SEC2_N - 1] * XI
            xs[slot] = bad
            assert not _zq.below_q(_pack(xs))
    assert _zq.below_q(_pack([SEC2_N - 1] * XI)) and _zq.below_q(_pack([0] * XI))


def test_slot_mask_selects_by_bit() -> None:
    bits = (1 << 0) | (1 << 5) | (1 << (XI - 1))
    got = _slots(_zq.slot_mask(bits))
    assert got == [2**256 - 1 if bits >> j & 1 else 0 for j in range(XI)]


# -- _bits -----------------------------------------------------------------------------------


def _bit(x: int, i: int) -> int:
    return (x >> i) & 1


def test_transpose_block_matches_the_definition() -> None:
    rnd = random.Random(1)
    x = rnd.getrandbits(256 * 256)
    t = _bits.transpose_block(x)
    for r, c in [(0, 0), (0, 255), (255, 0), (1, 2), (2, 1), (128, 3)] + [
        (rnd.randrange(256), rnd.randrange(256)) for _ in range(300)
    ]:
        assert _bit(t, 256 * r + c) == _bit(x, 256 * c + r)
    assert _bits.transpose_block(t) == x
    assert len(_bits._MASKS) == 8


def test_columns_to_rows_matches_the_definition() -> None:
    rnd = random.Random(2)
    for nrows in (256, 300, XI, 512):
        nblocks = -(-nrows // 256)
        cols = [rnd.randbytes(32 * nblocks) for _ in range(256)]
        rows = _bits.columns_to_rows(cols, nrows)
        assert len(rows) == 32 * nrows
        for j, col in [(0, 0), (nrows - 1, 255), (255, 7)] + [
            (rnd.randrange(nrows), rnd.randrange(256)) for _ in range(200)
        ]:
            row = int.from_bytes(rows[32 * j : 32 * j + 32], "little")
            assert _bit(row, col) == _bit(int.from_bytes(cols[col], "little"), j)
    with pytest.raises(AssertionError):
        _bits.columns_to_rows([bytes(32)] * 255, 256)
    with pytest.raises(AssertionError):
        _bits.columns_to_rows([bytes(32)] * 256, 257)  # a second block is needed
    with pytest.raises(AssertionError):
        _bits.columns_to_rows([bytes(63)] * 256, 512)  # one byte short of two blocks


def test_replicate_and_bit_slot_mask() -> None:
    assert _bits.replicate(0xAB, 16, 3) == 0x00AB00AB00AB
    assert _bits.replicate(5, 256, 2) == 5 | 5 << 256
    full = _bits.bit_slot_mask(0b101, 16, 3)
    assert full == 0xFFFF << 32 | 0xFFFF
    part = _bits.bit_slot_mask(0b110, 32, 3, ones=8)
    assert part == 0xFF << 64 | 0xFF << 32
    assert _bits.bit_slot_mask(0b1, 128, 2, ones=64) == (1 << 64) - 1
    assert _bits.bit_slot_mask(0b10, 256, 2, ones=128) == ((1 << 128) - 1) << 256
    assert _bits.bit_slot_mask(0, 8, 4) == 0 and _bits.bit_slot_mask(1 << 4, 8, 4) == 0


def _gf_mul(a: int, b: int) -> int:
    """GF(2^128) product modulo x^128 + x^7 + x^2 + x + 1, bit by bit."""
    r = 0
    for i in range(128):
        if b >> i & 1:
            r ^= a << i
    for i in range(254, 127, -1):
        if r >> i & 1:
            r ^= (1 << i) | (0b10000111 << (i - 128))
    return r


def test_gf_reference_is_the_gcm_field() -> None:
    # x^127 * x = x^128 = x^7 + x^2 + x + 1
    assert _gf_mul(1 << 127, 2) == 0x87 and _gf_mul(1, 12345) == 12345


@pytest.mark.parametrize(("ncols", "m"), [(1, 1), (2, 3), (3, 2), (5, 4), (256, 7)])
def test_check_hash_matches_a_bitwise_gf128_computation(ncols: int, m: int) -> None:
    rnd = random.Random(ncols * 10 + m)
    chis = [rnd.getrandbits(128) for _ in range(m)]
    chis[0] |= 1 << 127  # the top bit of a weight is used
    col_bytes = 16 * (m + 1)
    cols = [rnd.randbytes(col_bytes) for _ in range(ncols)]
    cols[0] = b"\xff" * col_bytes  # every chunk at its top
    got = _bits.check_hash(b"".join(cols), ncols, chis)
    assert len(got) == 16 * ncols
    for k, col in enumerate(cols):
        chunks = [int.from_bytes(col[16 * c : 16 * c + 16], "little") for c in range(m + 1)]
        want = chunks[m]
        for c in range(m):
            want ^= _gf_mul(chis[c], chunks[c])
        assert got[16 * k : 16 * k + 16] == want.to_bytes(16, "little"), k
    with pytest.raises(AssertionError):
        _bits.check_hash(b"".join(cols), ncols, chis[:-1])
