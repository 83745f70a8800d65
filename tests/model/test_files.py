"""Fuzz the model loader: whatever the bytes, ``load_network`` returns a network or raises
ModelFileError, nothing else (no zlib.error, MemoryError, AttributeError, RecursionError, ...).

Inputs: random bytes; byte flips, truncations and splices of a real saved model.npz (plain and
compressed); and well-formed .npz archives whose ``meta`` JSON or arrays are wrong in type,
shape, dtype, value or presence. About 650 examples, a few seconds.
"""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet.model.files import ModelFileError, load_network, save_network
from fastnet.model.network import init_network
from fastnet.training.checkpoint import CheckpointError, load_checkpoint

WORK = Path(tempfile.mkdtemp(prefix="fastnet-model-fuzz-"))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _base(bn: bool) -> tuple[bytes, dict]:
    net = init_network(12, [6, 5], 4, bn=bn, rng=np.random.default_rng(0))
    if bn:
        for layer in net.layers[:-1]:
            layer.mu_av, layer.v_av = np.zeros(layer.W.shape[0], np.float32), np.ones(layer.W.shape[0], np.float32)
    path = WORK / f"base-{bn}.npz"
    save_network(path, net, np.zeros(12), np.ones(12))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return path.read_bytes(), arrays


BASES = {bn: _base(bn) for bn in (True, False)}


def compressed(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


COMPRESSED = compressed(BASES[True][1])


def load_bytes(raw: bytes, loader=load_network, allowed=ModelFileError):
    """Load ``raw`` as a file; only ``allowed`` may come out."""
    path = WORK / "fuzzed.npz"
    path.write_bytes(raw)
    try:
        loader(path)
    except allowed:
        pass


def test_the_unmodified_files_load():
    for raw, _ in BASES.values():
        (WORK / "ok.npz").write_bytes(raw)
        net, mean, std = load_network(WORK / "ok.npz")
        assert net.sizes == [12, 6, 5, 4] and mean.shape == (12,)
    (WORK / "ok.npz").write_bytes(COMPRESSED)
    load_network(WORK / "ok.npz")


@settings(max_examples=100, **SETTINGS)
@given(raw=st.one_of(st.binary(max_size=4096), st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b), st.binary(max_size=200).map(lambda b: b"\x93NUMPY\x01\x00" + b)))
def test_random_bytes(raw):
    load_bytes(raw)


@settings(max_examples=200, **SETTINGS)
@given(bn=st.booleans(), use_compressed=st.booleans(), data=st.data())
def test_byte_flips_of_a_real_model(bn, use_compressed, data):
    raw = bytearray(COMPRESSED if use_compressed else BASES[bn][0])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=12))
    for at, value in flips:
        raw[at] = value
    load_bytes(bytes(raw))


@settings(max_examples=150, **SETTINGS)
@given(bn=st.booleans(), data=st.data())
def test_truncations_and_splices_of_a_real_model(bn, data):
    raw = BASES[bn][0]
    a = data.draw(st.integers(0, len(raw)))
    b = data.draw(st.integers(a, len(raw)))
    insert = data.draw(st.binary(max_size=64))
    mode = data.draw(st.sampled_from(["truncate", "cut", "insert", "duplicate"]))
    mutated = {"truncate": raw[:a], "cut": raw[:a] + raw[b:], "insert": raw[:a] + insert + raw[a:], "duplicate": raw[:b] + raw[a:b] + raw[b:]}[mode]
    load_bytes(mutated)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
META_KEYS = ["format", "sizes", "bn", "eps", "alpha", "dtype", "init", "sigma"]
ODD_ARRAYS = st.sampled_from([
    np.zeros((2, 2)), np.array(1.5), np.zeros(6, np.float16), np.array(["x"]), np.zeros(6, np.complex64), np.zeros(0, np.float32),
    np.zeros(3, [("a", "f4")]), np.zeros(6, np.int32), np.zeros(6, "M8[s]"), np.full(6, np.nan, np.float32), np.full((6, 12), np.inf, np.float32),
    np.zeros((6, 12), np.float64), np.zeros((12, 6), np.float32), np.frombuffer(b'{"format": 1}', np.uint8), np.array(b"bytes"),
])


@settings(max_examples=200, **SETTINGS)
@given(bn=st.booleans(), use_compressed=st.booleans(), data=st.data())
def test_well_formed_archives_with_wrong_contents(bn, use_compressed, data):
    arrays = dict(BASES[bn][1])
    meta = json.loads(str(arrays["meta"]))
    for _ in range(data.draw(st.integers(0, 3))):
        meta[data.draw(st.sampled_from(META_KEYS + ["extra"]))] = data.draw(JSON)
    arrays["meta"] = np.array(json.dumps(meta))
    action = data.draw(st.sampled_from(["meta-text", "replace", "drop", "add", "none"]))
    if action == "meta-text":
        arrays["meta"] = data.draw(st.sampled_from([np.array("[1, 2]"), np.array("null"), np.array("{"), np.array("[" * 50_000),
                                                    np.array([json.dumps(meta)] * 2), np.array(json.dumps(meta).encode())]))
    elif action == "replace":
        arrays[data.draw(st.sampled_from(sorted(arrays)))] = data.draw(ODD_ARRAYS)
    elif action == "drop":
        del arrays[data.draw(st.sampled_from(sorted(arrays)))]
    elif action == "add":
        arrays[data.draw(st.sampled_from(["W9", "mu_av2", "norm_mean", "opt.m"]))] = data.draw(ODD_ARRAYS)
    raw = compressed(arrays) if use_compressed else _plain(arrays)
    load_bytes(raw)


def _plain(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("shape", ["(1000000000000,)", "(100000000000,)", "(1099511627776,)", "(-1,)", "(2, -3)"])
def test_npy_headers_claiming_absurd_shapes(shape):
    """np.load allocates the array a header claims before reading it: refused, not MemoryError."""
    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    npy = b"\x93NUMPY\x01\x00" + (len(header) + pad + 1).to_bytes(2, "little") + header + b" " * pad + b"\n" + b"\0" * 64
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("meta.npy", _plain({"x": np.array("{}")})[0:0])  # an empty member: not an array at all
        z.writestr("W1.npy", npy)
    load_bytes(buf.getvalue())


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_checkpoint_loader_byte_flips(data, fake_checkpoint):
    """The checkpoint loader shares the reading code; only CheckpointError may come out."""
    raw = bytearray(fake_checkpoint)
    for at, value in data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=8)):
        raw[at] = value
    load_bytes(bytes(raw), load_checkpoint, CheckpointError)


@pytest.fixture(scope="module")
def fake_checkpoint():
    from fastnet.training.checkpoint import save_checkpoint
    from fastnet.training.config import TrainConfig
    from fastnet.training.state import History, Position

    net = init_network(12, [6], 4, bn=True, rng=np.random.default_rng(0))
    net.layers[0].mu_av, net.layers[0].v_av = np.zeros(6, np.float32), np.ones(6, np.float32)
    history = History(evals=[{"epoch": 1.0, "step": 3, "train_loss": 1.0}], step_eta=[0.1, 0.2, 0.3], step_loss=[2.0, 1.5, 1.2])
    path = WORK / "checkpoint.npz"
    save_checkpoint(path, net, history, Position(3, 1, 0, np.random.default_rng(0).bit_generator.state), TrainConfig().to_dict())
    assert load_checkpoint(path).position.t == 3
    return path.read_bytes()
