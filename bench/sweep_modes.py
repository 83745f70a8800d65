"""The ways of training the models of a lambda sweep that bench_sweep.py and scripts/bench_sweep.py time.

The sweep: the lambda-search preset's network and setting (3-layer [50, 50], batch norm, batch
100, cyclic eta 1e-5..1e-1, float32) for the 8 lambdas of its coarse grid, trained for
``epochs`` epochs each (n_s = epochs x n_train / 200, one cycle), every epoch evaluated on all
training and validation images as ``fit`` does. Modes:

* ``sequential`` -- :func:`fastnet.training.loop.fit` for each model, one after another, in this
  process, at this process's thread setting;
* ``lockstep`` -- :func:`fastnet.training.lockstep.fit_lockstep` of all models, in this process;
* ``sequential-1t``, ``lockstep-1t`` -- the same with this process's BLAS limited to one
  thread while they run (threadpoolctl), to separate what the thread setting does;
* ``lockstep-2w`` -- two spawned worker processes, BLAS pinned to one thread each
  (:func:`fastnet.experiments.executor.pin_threads`), each training half of the models in lock-step;
* ``sequential-2w`` -- the same two workers, each training its half one after another (a
  sweep without lock-step);
* ``floor-2w`` -- the same two workers running only the matrix products of their half in
  lock-step form (:class:`FloorProducts`): the time no schedule of this sweep built on this
  BLAS can beat, so ``sequential`` / ``floor-2w`` is the most any way of training it could gain
  over one after another.

Workers load the data and warm up (:func:`warm_up`) before the clock starts (they report ready
and wait for a go), and the caller warms up its own process, so every mode is timed on
training and evaluation alone; no run folders are written.
"""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

MODES = ("sequential", "lockstep", "lockstep-2w", "sequential-1t", "lockstep-1t", "sequential-2w", "floor-2w")
N_TRAIN, N_VAL, D, K = 45_000, 5_000, 3072, 10


def sweep_configs(models: int, epochs: int, n_train: int, backend: str = "auto") -> list:
    """The lambda-search configurations of the first ``models`` coarse lambdas (cycled if more),
    shortened to ``epochs`` epochs of ``n_train`` images."""
    from fastnet.experiments.assignment import coarse_lambdas, search_config

    lams = coarse_lambdas()
    n_s = max(1, epochs * n_train // 200)  # one cycle = 2 n_s steps of 100 images
    return [replace(search_config(lams[i % len(lams)], backend=backend), n_s=n_s, cycles=1).validate() for i in range(models)]


def synthetic_data(n_train: int = N_TRAIN, n_val: int = N_VAL, seed: int = 0):
    """Standard-normal float32 rows of CIFAR-10's width and random labels (the values do not
    change the time), as a Dataset-like namespace."""
    rng = np.random.default_rng(seed)
    return SimpleNamespace(X_train=rng.standard_normal((n_train, D), dtype=np.float32), y_train=rng.integers(0, K, n_train),
                           X_val=rng.standard_normal((n_val, D), dtype=np.float32), y_val=rng.integers(0, K, n_val),
                           label_names=[str(k) for k in range(K)], source="synthetic")


def load(data_spec: dict):
    """The data a spec names: ``{"kind": "real", "dir": ...}`` or ``{"kind": "synthetic", "n_train": ...}``."""
    if data_spec["kind"] == "real":
        from fastnet.data.cifar10 import load_cifar10

        data = load_cifar10(data_spec.get("dir"), split="a3", n_val=N_VAL, dtype=np.float32, progress=False)
        n = data_spec.get("n_train")
        if n and n < data.X_train.shape[0]:
            data.X_train, data.y_train = data.X_train[:n], data.y_train[:n]
        return data
    return synthetic_data(data_spec.get("n_train", N_TRAIN), data_spec.get("n_val", N_VAL))


def train_sequential(cfgs, data) -> None:
    from fastnet.backends import resolve
    from fastnet.training.config import new_network
    from fastnet.training.loop import fit

    for cfg in cfgs:
        fit(new_network(cfg, data.X_train.shape[1], K), data, cfg, resolve(cfg.backend).ops, progress=False)


def train_lockstep(cfgs, data) -> None:
    from fastnet.backends import resolve
    from fastnet.training.config import new_network
    from fastnet.training.lockstep import fit_lockstep

    outcomes = fit_lockstep([new_network(cfg, data.X_train.shape[1], K) for cfg in cfgs], data, cfgs, resolve(cfgs[0].backend).ops)
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise failed[0]


class FloorProducts:
    """Only the matrix products that training and evaluating ``cfgs`` (one architecture) cannot
    avoid, in their widest form, into arrays made here once -- the sweep's matrix-multiply
    floor, as bench/peers.py's FloorImpl is one model's. :meth:`run` does, for the sweep's
    steps:

    * each training step: the first layers of all M models as one (n, d) @ (d, M m_1) forward
      product and one (d, n) @ (n, M m_1) weight gradient (no input gradient); per model, the
      other layers' forward, weight-gradient and input-gradient products;
    * after every epoch (as fit evaluates): every training and validation row through the same
      forward products, in fit's chunks of EVAL_CHUNK rows.

    The first layer's input is a contiguous block of rows, in shuffled order, of a float32
    standard-normal array the size of the data (no gather, no normalisation: they are not
    products); the other operands hold fixed values (a product's speed does not depend on
    them). No batch norm, loss or update.
    """

    def __init__(self, cfgs, data):
        from fastnet.model.network import EVAL_CHUNK

        cfg = cfgs[0]
        M, n, d = len(cfgs), cfg.batch, data.X_train.shape[1]
        sizes = [d, *cfg.hidden, K]
        n_train = data.X_train.shape[0]
        self.n, self.chunk, self.per_epoch = n, EVAL_CHUNK, n_train // n
        self.steps = 2 * cfg.resolved_n_s(n_train) * cfg.cycles
        self.rng = np.random.default_rng(0)
        f32 = np.float32
        self.X = self.rng.standard_normal((n_train + len(data.y_val), d), dtype=f32)  # training rows, then validation rows
        self.Wt = self.rng.standard_normal((d, M * sizes[1]), dtype=f32)
        self.S1, self.G1, self.dW1 = np.empty((n, self.Wt.shape[1]), f32), np.ones((n, self.Wt.shape[1]), f32), np.empty_like(self.Wt)
        self.S1e = np.empty((EVAL_CHUNK, self.Wt.shape[1]), f32)
        # per model and layer 2..k: W (out, in); in training its input X, score gradient G and
        # the products' outputs S, dW, dX; in evaluation its input and output chunk
        self.small = [(self.rng.standard_normal((m_out, m_in), dtype=f32), np.ones((n, m_in), f32), np.ones((n, m_out), f32),
                       np.empty((n, m_out), f32), np.empty((m_out, m_in), f32), np.empty((n, m_in), f32),
                       np.ones((EVAL_CHUNK, m_in), f32), np.empty((EVAL_CHUNK, m_out), f32))
                      for _ in range(M) for m_in, m_out in zip(sizes[1:-1], sizes[2:])]

    def run(self) -> None:
        mm, n, X, Wt = np.matmul, self.n, self.X, self.Wt
        for t in range(self.steps):
            if t % self.per_epoch == 0:
                blocks = self.rng.permutation(self.per_epoch)
            j = blocks[t % self.per_epoch]
            Xb = X[j * n : (j + 1) * n]
            mm(Xb, Wt, out=self.S1)
            for W, Xl, G, S, dW, dX, _, _ in self.small:
                mm(Xl, W.T, out=S)
                mm(G.T, Xl, out=dW)
                mm(G, W, out=dX)
            mm(Xb.T, self.G1, out=self.dW1)
            if (t + 1) % self.per_epoch == 0 or t + 1 == self.steps:
                for start in range(0, X.shape[0], self.chunk):
                    Xc = X[start : start + self.chunk]
                    rows = len(Xc)
                    mm(Xc, Wt, out=self.S1e[:rows])
                    for W, _, _, _, _, _, Xe, Se in self.small:
                        mm(Xe[:rows], W.T, out=Se[:rows])


def warm_up(cfgs, data) -> None:
    """A few steps of both ways of training on a slice of the data: Numba compiles or loads
    its cached kernels, BLAS and the allocator warm up, outside any timing."""
    small = SimpleNamespace(X_train=data.X_train[:400], y_train=data.y_train[:400], X_val=data.X_val[:100], y_val=data.y_val[:100],
                            label_names=data.label_names, source="warm-up")
    short = [replace(cfg, n_s=2) for cfg in cfgs[:2]]
    train_sequential(short, small)
    train_lockstep(short, small)


TRAIN = {"sequential": train_sequential, "lockstep": train_lockstep}


def _worker(conn, data_spec: dict, cfg_dicts: list, kind: str) -> None:
    from fastnet.experiments.executor import pin_threads

    pin_threads()
    from fastnet.backends import resolve
    from fastnet.training.config import TrainConfig

    cfgs = [TrainConfig.from_dict(d) for d in cfg_dicts]
    data = load(data_spec)
    if kind == "floor":
        run = FloorProducts(cfgs, data).run
    else:
        resolve(cfgs[0].backend)
        warm_up(cfgs, data)
        run = lambda: TRAIN[kind](cfgs, data)  # noqa: E731
    conn.send("ready")
    conn.recv()
    t0 = time.perf_counter()
    run()
    conn.send(time.perf_counter() - t0)
    conn.close()


class Workers:
    """Two (or ``n``) spawned, pinned processes that each train a share of the models once
    they are told to go; :meth:`run` returns the wall time from go to the last one done."""

    def __init__(self, cfgs, data_spec: dict, kind: str, n: int = 2):
        ctx = multiprocessing.get_context("spawn")
        shares = [cfgs[i::n] for i in range(n)]
        self.conns, self.procs = [], []
        for share in shares:
            if not share:
                continue
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, data_spec, [c.to_dict() for c in share], kind), daemon=True)
            p.start()
            self.conns.append(mine)
            self.procs.append(p)
        for c in self.conns:
            if c.recv() != "ready":
                raise RuntimeError("a benchmark worker failed to start")

    def run(self) -> float:
        t0 = time.perf_counter()
        for c in self.conns:
            c.send("go")
        for c in self.conns:
            c.recv()
        wall = time.perf_counter() - t0
        for p in self.procs:
            p.join()
        return wall


def time_mode(mode: str, cfgs, data, data_spec: dict) -> float:
    """Wall seconds of training ``cfgs`` in ``mode`` (workers' start-up and data loading excluded)."""
    if mode.endswith("-2w"):
        return Workers(cfgs, data_spec, mode_kind(mode)).run()
    import contextlib

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1) if mode.endswith("-1t") else contextlib.nullcontext():
        t0 = time.perf_counter()
        TRAIN[mode_kind(mode)](cfgs, data)
        return time.perf_counter() - t0


def mode_kind(mode: str) -> str:
    """What a mode runs: "sequential", "lockstep" or "floor" (the mode's name before its "-")."""
    return mode.split("-")[0]
