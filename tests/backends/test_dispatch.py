"""Backend selection: the auto rule, names, the environment, fallbacks with one notice each,
strict mode, a backend lacking an op, a mock backend proving the network uses only ``ops``,
lazy imports, and Numba's on-disk cache across processes.

The extension is hidden the way a failed build would leave things: ``sys.modules`` maps
``fastnet.ext._ckernels`` to None (so importing it raises ImportError) and the registry's caches
are emptied, all through ``monkeypatch`` so every test leaves the process as it found it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastnet.ext
from fastnet import backends
from fastnet.backends import (
    AUTO_ORDER,
    NAMES,
    OPS,
    FastnetBackendNotice,
    dispatch,
    load,
    resolve,
)
from fastnet.backends import reference as ref
from fastnet.errors import BackendError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Empty load cache and notice memory, a clean environment; restored afterwards."""
    monkeypatch.setattr(dispatch, "_cache", {})
    monkeypatch.setattr(dispatch, "_noticed", set())
    monkeypatch.delenv("FASTNET_BACKEND", raising=False)
    monkeypatch.delenv("FASTNET_REQUIRE_CYTHON", raising=False)


@pytest.fixture
def no_extension(monkeypatch):
    """As if the extension had not been built."""
    monkeypatch.setitem(sys.modules, "fastnet.ext._ckernels", None)
    monkeypatch.delitem(sys.modules, "fastnet.backends.cython_ops", raising=False)
    monkeypatch.delattr(fastnet.ext, "_ckernels", raising=False)
    monkeypatch.delattr(backends, "cython_ops", raising=False)


def notices(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FastnetBackendNotice)]


def first_available(order) -> str:
    return next(n for n in order if load(n).available)


# ------------------------------------------------------------------------------ names


def test_auto_takes_the_first_available_of_auto_order():
    assert resolve("auto").name == first_available(AUTO_ORDER)
    assert resolve().name == first_available(AUTO_ORDER)


@pytest.mark.parametrize("order", [("numpy", "numba", "cython"), ("numba", "cython", "numpy"), ("cython", "numba", "numpy")])
def test_auto_follows_the_order(monkeypatch, order):
    monkeypatch.setattr(dispatch, "AUTO_ORDER", order)
    assert resolve("auto").name == first_available(order)


def test_auto_order_lists_every_backend_once_numpy_last():
    assert sorted(AUTO_ORDER) == sorted(NAMES) and AUTO_ORDER[-1] == "numpy"


@pytest.mark.parametrize("name", NAMES)
def test_a_named_available_backend_is_used(name):
    if not load(name).available:
        pytest.skip(f"{name} unavailable: {load(name).reason}")
    backend = resolve(name)
    assert backend.name == name and backend.available and backend.version
    # every op, plus the backend's compiled whole step or None (fastnet.training.fused)
    assert set(vars(backend.ops)) == set(OPS) | {"fused_step"}
    assert (backend.ops.fused_step is not None) == (name in ("numba", "cython"))


def test_names_are_case_and_space_insensitive():
    assert resolve("  NumPy ").name == "numpy"


@pytest.mark.parametrize("bad", ["torch", "", "numpy,numba", "ref"])
def test_unknown_name_is_a_value_error_listing_the_valid_ones(bad):
    with pytest.raises(ValueError) as err:
        resolve(bad)
    for valid in ("auto",) + NAMES:
        assert valid in str(err.value)


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("FASTNET_BACKEND", "numpy")
    assert resolve().name == "numpy"
    assert resolve(None).name == "numpy"
    assert resolve("auto").name == first_available(AUTO_ORDER)  # an explicit name wins
    monkeypatch.setenv("FASTNET_BACKEND", "")
    assert resolve().name == first_available(AUTO_ORDER)
    monkeypatch.setenv("FASTNET_BACKEND", "fortran")
    with pytest.raises(ValueError, match="fortran"):
        resolve()


def test_info_describes_every_backend():
    described = [b.describe() for b in backends.info()]
    assert [d.split(":")[0] for d in described] == list(NAMES)
    assert all("available" in d for d in described)


# ------------------------------------------------------------------- missing extension


def test_missing_extension_is_unavailable_with_the_import_error_as_reason(no_extension):
    backend = load("cython")
    assert not backend.available and backend.ops is None
    assert "fastnet.ext._ckernels" in backend.reason
    assert "unavailable" in backend.describe()


def test_importing_cython_ops_without_the_extension_raises_import_error(no_extension):
    with pytest.raises(ImportError):
        import fastnet.backends.cython_ops  # noqa: F401


def test_missing_extension_falls_back_with_one_notice(no_extension):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = resolve("cython")
        again = resolve("cython")
        auto = resolve("auto")
    expected = next(n for n in AUTO_ORDER if n != "cython" and load(n).available)
    assert first.name == again.name == expected
    assert auto.name == first_available(AUTO_ORDER)
    said = notices(record)
    assert len(said) == 1, said  # one per cause per process, however often resolved
    assert "cython" in said[0] and "fastnet.ext._ckernels" in said[0]


def test_stale_extension_is_an_import_error(monkeypatch):
    """An extension from an older build (other VERSION, missing kernels) is refused at import."""
    stale = types.ModuleType("fastnet.ext._ckernels")
    stale.VERSION = "fastnet.ext._ckernels 1"
    stale.relu_backward = lambda *a: None
    monkeypatch.setitem(sys.modules, "fastnet.ext._ckernels", stale)
    monkeypatch.delitem(sys.modules, "fastnet.backends.cython_ops", raising=False)
    monkeypatch.delattr(backends, "cython_ops", raising=False)
    backend = load("cython")
    assert not backend.available and "rebuild" in backend.reason


def test_strict_mode_makes_a_missing_extension_an_error(no_extension, monkeypatch):
    monkeypatch.setenv("FASTNET_REQUIRE_CYTHON", "1")
    for name in ("cython", "auto", None):
        with pytest.raises(BackendError, match="FASTNET_REQUIRE_CYTHON"):
            resolve(name)
    assert resolve("numpy").name == "numpy"  # not asked for, not needed


def test_strict_mode_with_the_extension_present(monkeypatch):
    if not load("cython").available:
        pytest.skip("the extension is not built here")
    monkeypatch.setenv("FASTNET_REQUIRE_CYTHON", "1")
    assert resolve("cython").name == "cython"
    assert resolve("auto").name == first_available(AUTO_ORDER)


def test_missing_numba_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "fastnet.backends.numba_ops", raising=False)
    monkeypatch.delattr(backends, "numba_ops", raising=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        backend = resolve("numba")
    assert backend.name != "numba" and backend.available
    assert len(notices(record)) == 1 and "numba" in notices(record)[0]


# ------------------------------------------------------------------------ missing op


def test_a_backend_missing_an_op_uses_the_reference_for_it_with_one_notice(monkeypatch):
    partial = types.ModuleType("fastnet.backends.numba_ops")
    for op in OPS:
        if op != "softmax_xent":
            setattr(partial, op, getattr(ref, op))
    partial.VERSION = "partial"
    monkeypatch.setitem(sys.modules, "fastnet.backends.numba_ops", partial)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        backend = resolve("numba")
        resolve("numba")
    assert backend.name == "numba" and backend.fallback_ops == ("softmax_xent",)
    assert backend.ops.softmax_xent is ref.softmax_xent
    assert "reference ops for softmax_xent" in backend.describe()
    said = notices(record)
    assert len(said) == 1 and "softmax_xent" in said[0]


# ------------------------------------------------------------------------ mock backend


class CountingOps(SimpleNamespace):
    """A mock backend (scipy.fft's ``mock_backend`` idea): the reference ops, counted."""

    def __init__(self, originals):
        self.calls = {op: 0 for op in OPS}

        def counted(op):
            def call(*args, **kwargs):
                self.calls[op] += 1
                return originals[op](*args, **kwargs)

            return call

        super().__init__(**{op: counted(op) for op in OPS})


@pytest.fixture
def mock_ops(monkeypatch):
    """Counting ops; the reference module's own functions are booby-trapped, so any op the
    network computed without going through ``ops`` would fail the test."""
    originals = {op: getattr(ref, op) for op in OPS}
    bypassed = []

    def trap(op):
        def call(*args, **kwargs):
            bypassed.append(op)
            return originals[op](*args, **kwargs)

        return call

    for op in OPS:
        monkeypatch.setattr(ref, op, trap(op))
    ops = CountingOps(originals)
    ops.bypassed = bypassed
    return ops


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
def test_a_training_step_routes_every_op_through_the_backend(mock_ops, bn):
    from fastnet.model.network import evaluate, init_network
    from fastnet.training.stepper import train_step

    hidden = (6, 5, 4)  # k = 4 layers
    net = init_network(8, hidden, 3, bn=bn, dtype=np.float64, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((16, 8)), rng.integers(0, 3, 16)
    params_before = {k: v.copy() for k, v in net.params().items()}

    loss = train_step(net, X, y, lam=0.01, eta=0.1, ops=mock_ops)
    assert np.isfinite(loss)
    calls = dict(mock_ops.calls)
    k, hidden_layers = len(hidden) + 1, len(hidden)
    assert calls["linear_forward"] == k and calls["linear_backward"] == k
    assert calls["softmax_xent"] == 1 and calls["softmax_xent_backward"] == 1
    assert calls["sgd_update_inplace"] == len(net.params())
    if bn:
        assert calls["bn_relu_forward_train"] == hidden_layers and calls["bn_relu_backward"] == hidden_layers
        assert calls["bias_relu_forward"] == calls["relu_backward"] == 0
    else:
        assert calls["bias_relu_forward"] == hidden_layers and calls["relu_backward"] == hidden_layers
        assert calls["bn_relu_forward_train"] == calls["bn_relu_backward"] == 0
    assert all(not np.array_equal(v, params_before[k]) for k, v in net.params().items())  # every parameter moved

    evaluate(net, X, y, 0.01, mock_ops)
    after = mock_ops.calls
    assert after["bn_relu_forward_eval" if bn else "bias_relu_forward"] > calls["bn_relu_forward_eval" if bn else "bias_relu_forward"]
    assert mock_ops.bypassed == [], f"ops computed without the backend: {mock_ops.bypassed}"


def test_training_step_with_the_mock_covers_every_op(mock_ops):
    """Across a BN, a plain and a BN-after-ReLU network (the last with Adam), train and
    evaluate use all of OPS."""
    from fastnet.model.network import evaluate, init_network
    from fastnet.model.optim import Adam
    from fastnet.training.stepper import train_step

    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((10, 5)), rng.integers(0, 3, 10)
    for bn in (True, False):
        net = init_network(5, (4,), 3, bn=bn, dtype=np.float64, rng=np.random.default_rng(0))
        train_step(net, X, y, lam=0.0, eta=0.01, ops=mock_ops)
        evaluate(net, X, y, 0.0, mock_ops)
    # the bonus ops: batch norm after the ReLU, trained with Adam
    net = init_network(5, (4,), 3, bn=True, dtype=np.float64, rng=np.random.default_rng(0), bn_placement="after")
    train_step(net, X, y, lam=0.0, eta=0.001, ops=mock_ops, optimizer=Adam(net.params()), t=0)
    evaluate(net, X, y, 0.0, mock_ops)
    # soft targets (label smoothing, MixUp: issue 17)
    train_step(net, X, np.full((10, 3), 1 / 3), lam=0.0, eta=0.001, ops=mock_ops)
    assert [op for op, n in mock_ops.calls.items() if n == 0] == []
    assert mock_ops.bypassed == []


# ---------------------------------------------------------------------- processes


def _run_child(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FASTNET_BACKEND", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout, check=False)


def test_import_is_lazy():
    """``import fastnet`` and ``fastnet.backends`` load neither Numba nor the extension."""
    child = _run_child("""
        import sys, fastnet, fastnet.backends
        fastnet.backends.resolve("numpy")
        print(sorted(m for m in ("numba", "fastnet.ext._ckernels", "fastnet.backends.numba_ops") if m in sys.modules))
    """)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"


_RUN_EVERY_OP = """
    import json, sys
    import numpy as np
    from fastnet.backends import numba_ops as nb
    rng = np.random.default_rng(0)
    f = np.float32
    S, G = rng.standard_normal((8, 5)).astype(f), rng.standard_normal((8, 5)).astype(f)
    g, b = np.ones(5, f), np.zeros(5, f)
    y = rng.integers(0, 5, 8)
    fwd = nb.bn_relu_forward_train(S, g, b, 1e-8)
    nb.bn_relu_forward_eval(S, g, b, fwd.mu, fwd.v, 1e-8)
    nb.bn_relu_backward(G, fwd.X, fwd.S_hat, g, fwd.v, 1e-8)
    nb.relu_backward(G, nb.bias_relu_forward(S, b))
    nb.softmax_xent_backward(nb.softmax_xent(S, y).P, y)
    nb.sgd_update_inplace(S, G, 0.1)
    fwd2 = nb.bn_forward_train(S, g, b, 1e-8)
    nb.bn_forward_eval(S, g, b, fwd2.mu, fwd2.v, 1e-8)
    nb.bn_backward(G, fwd2.S_hat, g, fwd2.v, 1e-8)
    nb.adam_update_inplace(S, G, np.zeros_like(S), np.zeros_like(S), 1e-3, 0.9, 0.999, 1e-8, 1)
    kernels = {name: obj for name, obj in vars(nb).items() if name.endswith("_kernel") and hasattr(obj, "stats")}
    print(json.dumps({name: [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()),
                             len(k.signatures)] for name, k in kernels.items()}))
"""


def test_second_process_compiles_nothing(tmp_path):
    """cache=True: the first process compiles and writes the cache; a second one only loads.

    Run in children with their own NUMBA_CACHE_DIR, so the test neither depends on nor
    disturbs the cache of this process. Numba counts, per kernel, the signatures it found in
    its cache (hits) and those it had to compile (misses).
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    first = _run_child(_RUN_EVERY_OP, env)
    assert first.returncode == 0, first.stderr
    cold = json.loads(first.stdout.splitlines()[-1])
    assert len(cold) == 12 and all(sigs == 1 for _, _, sigs in cold.values()), cold
    assert all(misses == 1 for _, misses, _ in cold.values()), cold  # compiled in the first
    index_files = list((tmp_path / "numba-cache").rglob("*.nbi"))
    assert len(index_files) >= 12, index_files

    second = _run_child(_RUN_EVERY_OP, env)
    assert second.returncode == 0, second.stderr
    warm = json.loads(second.stdout.splitlines()[-1])
    assert warm.keys() == cold.keys()
    assert {name: (hits, misses) for name, (hits, misses, _) in warm.items()} == {name: (1, 0) for name in warm}
