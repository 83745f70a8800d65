"""The lean loader: the same numbers as an eager, whole-array normalisation, in less memory.

``load_cifar10`` unpickles the batch files to uint8 without copying them, sums the training
statistics over those, fills the float arrays block by block while dropping each batch, and
keeps the test set as uint8, normalised when read (:class:`NormalisedImages`). The reference
here is the straightforward version it replaced: concatenate, then normalise whole arrays in
float64 and cast. Every float must be equal bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FOLDER, fake_batch, py2_batch_pickle

from fastnet.backends import load
from fastnet.data.batches import load_batch
from fastnet.data.cifar10 import load_cifar10
from fastnet.data.fetch import TEST_BATCH, TRAIN_BATCHES
from fastnet.data.images import NormalisedImages
from fastnet.model.network import evaluate, init_network, predict
from fastnet.training.stepper import train_step

OPS = load("numpy").ops


def eager_reference(folder: Path, split: str, n_val: int, dtype) -> dict:
    """The whole-array loader: concatenate, exact integer statistics, ``(U - mean) * (1 / std)``
    in float64, cast to ``dtype``."""
    names = TRAIN_BATCHES if split == "a3" else TRAIN_BATCHES[:2]
    batches = [load_batch(folder / name) for name in names]
    if split == "a3":
        U = np.concatenate([X for X, _ in batches])
        y = np.concatenate([y for _, y in batches])
        cut = len(U) - n_val
    else:
        U = np.concatenate([batches[0][0], batches[1][0]])
        y = np.concatenate([batches[0][1], batches[1][1]])
        cut = len(batches[0][0])
    U_test, y_test = load_batch(folder / TEST_BATCH)
    U_train = U[:cut]
    n = len(U_train)
    s1 = U_train.sum(axis=0, dtype=np.int64)
    s2 = (U_train.astype(np.int64) ** 2).sum(axis=0)
    mean = s1 / n
    std = np.sqrt((n * s2 - s1 * s1) / float(n) ** 2)
    std[std == 0] = 1.0

    def norm(V):
        return ((V - mean) * (1.0 / std)).astype(dtype)

    return {"X_train": norm(U_train), "X_val": norm(U[cut:]), "X_test": norm(U_test),
            "y_train": y[:cut], "y_val": y[cut:], "y_test": y_test, "mean": mean, "std": std}


def assert_same_bits(a, b, name: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{name}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
    assert a.tobytes() == b.tobytes(), f"{name} differs"


@pytest.fixture(scope="module")
def uneven_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Batches of unequal sizes (one of a single row), so that blocks, batches and the
    train/validation cut fall anywhere; pixel 0 constant (std 0 becomes 1)."""
    root = tmp_path_factory.mktemp("uneven")
    folder = root / FOLDER
    folder.mkdir()
    rng = np.random.default_rng(3)
    templates = rng.uniform(60.0, 195.0, size=(10, 3072))
    for name, n in zip([*TRAIN_BATCHES, TEST_BATCH], (300, 41, 1, 517, 260, 77)):
        X, y = fake_batch(n, rng, templates)
        X[:, 0] = 7
        (folder / name).write_bytes(py2_batch_pickle(X, y, name.encode()))
    return root


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("split, n_val", [("a3", 300), ("a3", 0), ("a3", 818), ("a3", 1118), ("a2", 5)])
def test_lean_loader_matches_eager_normalisation(uneven_cifar_dir: Path, split: str, n_val: int, dtype) -> None:
    ds = load_cifar10(uneven_cifar_dir, split=split, n_val=n_val, dtype=dtype, progress=False)
    ref = eager_reference(uneven_cifar_dir / FOLDER, split, n_val, dtype)
    for name, expected in ref.items():
        assert_same_bits(getattr(ds, name), expected, name)
    assert isinstance(ds.X_train, NormalisedImages) and ds.X_train.pixels.dtype == np.uint8   # a quarter of float32
    assert ds.X_train.pixels.flags.c_contiguous and ds.X_val.flags.c_contiguous
    assert ds.X_train.pixels.flags.owndata and ds.X_val.flags.owndata   # no view keeps the batches alive


def test_lean_loader_matches_on_the_fake_data_set(fake_cifar_dir: Path) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    for name, expected in eager_reference(fake_cifar_dir / FOLDER, "a3", 300, np.float32).items():
        assert_same_bits(getattr(ds, name), expected, name)


def test_test_set_reads_like_an_array(fake_cifar_dir: Path) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    T = ds.X_test
    assert isinstance(T, NormalisedImages) and T.pixels.dtype == np.uint8
    full = np.asarray(T)
    assert (T.shape, T.ndim, len(T), T.dtype) == (full.shape, 2, full.shape[0], np.float32)
    mask = np.arange(len(T)) % 3 == 0
    for index in (5, -1, slice(10, 40), slice(None, None, 7), np.array([4, 0, 4, 299]), mask,
                  (slice(2, 9), 17), (3, slice(0, 5)), (np.array([1, 2]), np.array([3, 4]))):
        got = T[index]
        assert_same_bits(got, full[index], repr(index))
    assert T[10:40].flags.c_contiguous and T[10:40].flags.writeable
    np.testing.assert_array_equal(T * ds.std + ds.mean, full * ds.std + ds.mean)   # operators go through __array__
    assert np.asarray(T, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError):
        np.asarray(T, copy=False)
    assert "uint8" in repr(T)


def test_evaluate_and_predict_read_the_test_set_in_chunks(fake_cifar_dir: Path) -> None:
    ds = load_cifar10(fake_cifar_dir, n_val=300, progress=False)
    net = init_network(3072, [20], 10, rng=np.random.default_rng(0))
    train_step(net, ds.X_train[:100], ds.y_train[:100], 0.01, 0.05, OPS)
    full = np.asarray(ds.X_test)
    for chunk in (7, 128, 10_000):
        assert evaluate(net, ds.X_test, ds.y_test, 0.01, OPS, chunk=chunk) == evaluate(net, full, ds.y_test, 0.01, OPS, chunk=chunk)
        np.testing.assert_array_equal(predict(net, ds.X_test, OPS, chunk=chunk), predict(net, full, OPS, chunk=chunk))
    rows = np.array([3, 1, 250, 299])
    assert evaluate(net, ds.X_test, ds.y_test, 0.01, OPS, chunk=3, rows=rows) == evaluate(net, full[rows], ds.y_test[rows], 0.01, OPS, chunk=3)


def test_load_batch_still_returns_a_writable_copy(fake_cifar_dir: Path) -> None:
    X, _ = load_batch(fake_cifar_dir / FOLDER / "data_batch_1")
    assert X.flags.c_contiguous and X.flags.writeable and X.flags.owndata


def _normalisers():
    """The compiled normalise_rows kernels this install has: the extension's and Numba's."""
    found = []
    try:
        from fastnet.ext._ckernels import normalise_rows
        found.append(pytest.param(normalise_rows, id="extension"))
    except ImportError:
        pass
    try:
        from fastnet.data.normalise import normalise_rows
        found.append(pytest.param(normalise_rows, id="numba"))
    except ImportError:
        pass
    return found


@pytest.mark.parametrize("kernel", _normalisers())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_and_numpy_normalisation_agree_bit_for_bit(uneven_cifar_dir: Path, dtype, kernel, monkeypatch) -> None:
    """NormalisedImages reads rows through a compiled normalise_rows when it can (the
    extension's, else Numba's); NumPy's normalise_into is the definition. Every way of reading
    rows gives the same bits with each kernel and without."""
    import fastnet.data.images as fd

    monkeypatch.setattr(fd, "_NORMALISER", [kernel])
    ds = load_cifar10(uneven_cifar_dir, n_val=300, dtype=dtype, progress=False)
    T = ds.X_train
    rows = np.array([0, 5, len(T) - 1, 5, 17])
    fast = [T[:], T[3:40], T[rows], T.take(rows, np.empty((5, 3072), dtype))]
    monkeypatch.setattr(fd, "_NORMALISER", [None])   # no compiled kernel: NumPy only
    slow = [T[:], T[3:40], T[rows], T.take(rows, np.empty((5, 3072), dtype))]
    for a, b in zip(fast, slow):
        assert_same_bits(a, b, "rows")
