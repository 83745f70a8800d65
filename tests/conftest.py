"""Shared fixtures: a small synthetic CIFAR-10 in the official layout, and the real one if present.

``write_fake_cifar`` (importable with ``from conftest import write_fake_cifar``) writes batch
files byte for byte in the structure of the official archive: Python-2 pickles (protocol 2)
with bytes keys, labels as a list of ints, and ``data`` a uint8 array pickled through
``numpy.core.multiarray._reconstruct``, as numpy 1 wrote it. ``py2_batch_pickle`` returns
those bytes for one batch.
"""
from __future__ import annotations

import importlib
import os
import re
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from fastnet import backends
from fastnet.training.state import History, StopRequest

FOLDER = "cifar-10-batches-py"


@pytest.fixture(autouse=True, scope="session")
def _sigint_not_ignored():
    """The interruption tests send SIGINT to this process, and fastnet leaves a SIGINT its
    parent ignored ignored (``nohup``, a job started in the background by a non-interactive
    shell, as some CI runners do): give the session Python's own handler for it."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True, scope="session")
def _gemm_cache_of_the_session(tmp_path_factory):
    """``--gemm auto``'s measurements go to a file of this session (subprocesses too), never to
    the user's cache: a test run leaves no choice behind, and finds none made elsewhere."""
    previous = os.environ.get("FASTNET_GEMM_CACHE")
    os.environ["FASTNET_GEMM_CACHE"] = str(tmp_path_factory.mktemp("gemm") / "gemm_choice.json")
    yield
    if previous is None:
        os.environ.pop("FASTNET_GEMM_CACHE", None)
    else:
        os.environ["FASTNET_GEMM_CACHE"] = previous


NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _s(b: bytes) -> bytes:
    """A Python-2 str: SHORT_BINSTRING, or BINSTRING when longer than 255 bytes."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def py2_batch_pickle(X: np.ndarray, y: np.ndarray, batch_label: bytes = b"batch") -> bytes:
    """The bytes of a batch file as the official archive lays them out.

    Parameters
    ----------
    X : ndarray of uint8, shape (n, 3072), n < 65536
    y : ndarray of int, shape (n,), values in 0..255
    batch_label : bytes
    """
    n = len(y)
    labels = b"".join(b"(" + b"".join(b"K" + bytes([int(c)]) for c in y[i:i + 1000]) + b"e"
                      for i in range(0, n, 1000))   # APPENDS in runs of 1000, as cPickle did
    return b"".join([
        b"\x80\x02}q\x01(", _s(b"batch_label"), b"q\x02", _s(batch_label), b"q\x03",
        _s(b"labels"), b"q\x04]q\x05", labels,
        _s(b"data"), b"q\x06cnumpy.core.multiarray\n_reconstruct\nq\x07cnumpy\nndarray\nq\x08",
        b"K\x00\x85", _s(b"b"), b"\x87Rq\t(K\x01M", struct.pack("<H", n),
        b"M\x00\x0c\x86cnumpy\ndtype\nq\n", _s(b"u1"), b"K\x00K\x01\x87Rq\x0b(K\x03", _s(b"|"),
        b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89",
        b"T", struct.pack("<I", X.size), np.ascontiguousarray(X, np.uint8).tobytes(),
        b"tbq\x0c", _s(b"filenames"), b"q\r]q\x0e(",
        b"".join(_s(b"img_%05d.png" % i) for i in range(n)), b"eu.",
    ])


def _meta_pickle() -> bytes:
    """``batches.meta`` as in the official archive."""
    names = b"".join(_s(name.encode()) for name in NAMES)
    return (b"\x80\x02}q\x01(" + _s(b"num_cases_per_batch") + b"M\x10'" + _s(b"label_names")
            + b"]q\x04(" + names + b"e" + _s(b"num_vis") + b"M\x00\x0cu.")


def fake_batch(n: int, rng: np.random.Generator, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images with balanced labels, each its class template plus noise, as uint8."""
    y = rng.permutation(np.arange(n) % 10)
    noise = rng.normal(0.0, 40.0, size=(n, 3072))
    X = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
    return X, y


def write_fake_cifar(root: str | os.PathLike[str], n_per_batch: int = 300, seed: int = 0) -> Path:
    """Write a small synthetic CIFAR-10 in the official layout below ``root``.

    ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` hold ``n_per_batch`` rows each,
    labels balanced over 0..9, pixels around a per-class mean image (so a network can learn),
    plus ``batches.meta``.

    Returns
    -------
    Path
        ``root/cifar-10-batches-py``.
    """
    rng = np.random.default_rng(seed)
    templates = rng.uniform(60.0, 195.0, size=(10, 3072))
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        X, y = fake_batch(n_per_batch, rng, templates)
        (folder / name).write_bytes(py2_batch_pickle(X, y, name.encode()))
    (folder / "batches.meta").write_bytes(_meta_pickle())
    return folder


@pytest.fixture(scope="session")
def fake_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder containing a synthetic ``cifar-10-batches-py`` (300 rows per batch).

    Session-scoped and shared: do not modify it; copy it (or call ``write_fake_cifar``) to
    damage files.
    """
    root = tmp_path_factory.mktemp("fake_cifar")
    write_fake_cifar(root)
    return root


@pytest.fixture(scope="session")
def real_cifar_dir() -> Path:
    """The folder containing the real ``cifar-10-batches-py``; skips the test if it is absent.

    Looks in ``$FASTNET_DATA``, then ``$XDG_CACHE_HOME/fastnet``, then ``~/.cache/fastnet``.
    """
    places = [os.environ.get("FASTNET_DATA"),
              os.environ.get("XDG_CACHE_HOME") and os.path.join(os.environ["XDG_CACHE_HOME"], "fastnet"),
              os.path.join(os.path.expanduser("~"), ".cache", "fastnet")]
    tried = []
    for place in filter(None, places):
        root = Path(place).expanduser()
        tried.append(str(root))
        if (root / FOLDER / "test_batch").is_file():
            return root
        if root.name == FOLDER and (root / "test_batch").is_file():
            return root.parent
    pytest.skip(f"real CIFAR-10 not found in {', '.join(tried)}; build it with "
                f"python ../shared/data/cifar10/build_cifar10.py ~/.cache/fastnet")


# ------------------------------------------------------- helpers shared by test modules

COMPILED = ("numba", "cython")


def compiled_module(name: str):
    """The backend's module itself (not the dispatcher's namespace, which would hide a
    missing op behind the reference). Skips when unavailable, unless CI demands the extension."""
    backend = backends.load(name)
    if not backend.available:
        if name == "cython" and os.environ.get("FASTNET_REQUIRE_CYTHON", "") == "1":
            pytest.fail(f"FASTNET_REQUIRE_CYTHON=1 but the cython backend is unavailable: {backend.reason}")
        pytest.skip(f"{name} backend unavailable: {backend.reason}")
    return importlib.import_module(backends.dispatch.MODULES[name])


def pdf_pages(path: Path) -> int:
    """Page objects in a PDF written by matplotlib (uncompressed object dictionaries)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes()))


class StopAt(StopRequest):
    """A stop request that 'arrives' once ``k`` steps are done (as a signal would)."""

    def __init__(self, history: History, k: int):
        self.history, self.k = history, k
        super().__init__()

    @property
    def signum(self):
        return signal.SIGINT if len(self.history.step_loss) >= self.k else None

    @signum.setter
    def signum(self, value):
        pass


def tree_sum(folder: Path) -> str:
    """A checksum of every file (name and bytes) below ``folder``: what a test compares before
    and after to show nothing there was written."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def fake(fake_cifar_dir):
    """The synthetic data set as the training tests load it: 1200 training rows, 300 validation."""
    from fastnet.data.cifar10 import load_cifar10

    return load_cifar10(fake_cifar_dir, n_val=300, progress=False)


def small_cfg(**kw):
    """A short run on :func:`fake`: 1200 training rows / batch 50 = 24 steps per epoch; 60 steps
    = 2.5 epochs; numpy backend; ``kw`` overrides."""
    from fastnet.training.config import TrainConfig

    base = dict(hidden=(20, 20), n_s=30, cycles=1, batch=50, eta_max=0.05, n_val=300, backend="numpy")
    return TrainConfig(**(base | kw)).validate()


class StopAfter(StopRequest):
    """A stop request that arrives at the ``k``-th look (fit looks before every step)."""

    def __init__(self, k):
        super().__init__()
        self.k, self.looks = k, 0

    @property
    def signum(self):
        self.looks += 1
        return 2 if self.looks > self.k else None

    @signum.setter
    def signum(self, value):
        pass


def stopped_run(cfg, out, data, monkeypatch, k: int = 30) -> None:
    """Train ``cfg`` into the run folder ``out`` and stop it at the ``k``-th look for a stop
    request (KeyboardInterrupt, as Ctrl-C), leaving its checkpoint to resume."""
    from contextlib import contextmanager

    import fastnet.runs.train as run_train

    real = run_train.new_runs_in

    @contextmanager
    def stopping(outs, overwrite):
        with real(outs, overwrite):
            yield StopAfter(k)

    with monkeypatch.context() as m:
        m.setattr(run_train, "new_runs_in", stopping)
        with pytest.raises(KeyboardInterrupt):
            run_train.run_to_folder(cfg, out, data=data, progress=False, plots=False)
