"""Fuzz load_batch: on any bytes it returns a valid batch or raises DataError, nothing else.

Three sources of input: random bytes; random mutations (bit flips, byte overwrites,
truncations, insertions, deletions) of small batch files in the official format and in the
formats Python 3 writes; and random sequences of the very opcodes a batch file uses, which
reach the array stand-ins with states that damage alone would seldom produce.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import py2_batch_pickle
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnet.data.batches import load_batch
from fastnet.errors import DataError

_rng = np.random.default_rng(0)
_X = _rng.integers(0, 256, (2, 3072), dtype=np.uint8)
_Y = np.array([3, 7])
BASES = {
    "official": py2_batch_pickle(_X, _Y, b"training batch 1 of 5"),
    "python3-p2": pickle.dumps({b"data": _X, b"labels": _Y.tolist()}, protocol=2),
    "python3-p4": pickle.dumps({"data": _X, "labels": _Y}, protocol=4),
}
HEAD = 300   # the header (keys, labels, array reconstruction) lies in the first bytes

FUZZ = settings(max_examples=300, deadline=None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file path reused by every example."""
    return tmp_path_factory.mktemp("fuzz") / "data_batch_1"


def check(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` and load it: a valid batch or DataError are the only outcomes."""
    path.write_bytes(blob)
    try:
        X, y = load_batch(path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert X.dtype == np.uint8 and X.ndim == 2 and X.shape[1] == 3072 and X.flags.c_contiguous
    assert y.dtype == np.int64 and y.shape == (len(X),)
    assert y.size == 0 or (y.min() >= 0 and y.max() <= 9)


@FUZZ
@given(blob=st.one_of(st.binary(max_size=2048),
                      st.binary(max_size=2048).map(lambda b: b"\x80\x02}q\x01(" + b)))
def test_random_bytes(scratch: Path, blob: bytes) -> None:
    check(scratch, blob)


_position = st.one_of(st.tuples(st.just("head"), st.integers(0, HEAD)),
                      st.tuples(st.just("tail"), st.integers(1, 200)),
                      st.tuples(st.just("any"), st.integers(0, 1 << 20)))
_mutation = st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
                      _position, st.integers(0, 255), st.binary(min_size=1, max_size=16))


def mutate(blob: bytes, mutations: list) -> bytes:
    """Apply ``(kind, (region, offset), byte, insert)`` mutations in turn."""
    b = bytearray(blob)
    for kind, (region, offset), value, extra in mutations:
        if not b:
            break
        pos = {"head": offset, "tail": len(b) - offset, "any": offset}[region] % len(b)
        if kind == "flip":
            b[pos] ^= 1 << (value % 8)
        elif kind == "set":
            b[pos] = value
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = extra
        else:
            del b[pos:pos + 1 + value % 16]
    return bytes(b)


def test_bases_are_valid(scratch: Path) -> None:
    for blob in BASES.values():
        scratch.write_bytes(blob)
        X, y = load_batch(scratch)
        np.testing.assert_array_equal(X, _X)
        np.testing.assert_array_equal(y, _Y)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_batches(scratch: Path, base: str, mutations: list) -> None:
    check(scratch, mutate(BASES[base], mutations))


_TOKENS = [
    b"(", b")", b"]", b"}", b"t", b"R", b"b", b"e", b"a", b"s", b"u", b"l", b"N", b"\x88",
    b"\x89", b"\x85", b"\x86", b"\x87", b"0", b"1", b"2", b"K\x00", b"K\x01", b"K\x03", b"K\x0a",
    b"M\x00\x0c", b"M\x01\x00", b"J\xff\xff\xff\xff", b"q\x01", b"q\x02", b"h\x01", b"h\x02",
    b"U\x04data", b"U\x06labels", b"X\x04data", b"U\x02u1", b"U\x02f8", b"U\x03<i8", b"U\x01|",
    b"U\x01>", b"U\x01b", b"X\x06latin1", b"X\x01a", b"T\x00\x0c\x00\x00" + bytes(3072),
    b"C\x08" + bytes(8), b"cnumpy\ndtype\n", b"cnumpy\nndarray\n",
    b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy._core.multiarray\n_reconstruct\n",
    b"c_codecs\nencode\n", b"\x81", b"\x93", b"\x94",
]


@FUZZ
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=40))
def test_random_opcode_sequences(scratch: Path, tokens: list) -> None:
    check(scratch, b"\x80\x02" + b"".join(tokens) + b".")
