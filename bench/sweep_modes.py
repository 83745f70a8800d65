"""The ways of training the models of a lambda sweep that bench_sweep.py and scripts/bench_sweep.py time.

The sweep: the lambda-search preset's network and setting (3-layer [50, 50], batch norm, batch
100, cyclic eta 1e-5..1e-1, float32) for the 8 lambdas of its coarse grid, trained for
``epochs`` epochs each (n_s = epochs x n_train / 200, one cycle), every epoch evaluated on all
training and validation images as ``fit`` does. Modes:

* ``sequential`` -- :func:`fastnet.train.fit` for each model, one after another, in this
  process, at this process's thread setting;
* ``lockstep`` -- :func:`fastnet.lockstep.fit_lockstep` of all models, in this process;
* ``sequential-1t``, ``lockstep-1t`` -- the same with this process's BLAS limited to one
  thread while they run (threadpoolctl), to separate what the thread setting does;
* ``lockstep-2w`` -- two spawned worker processes, BLAS pinned to one thread each
  (:func:`fastnet.sweep.pin_threads`), each training half of the models in lock-step;
* ``sequential-2w`` -- the same two workers, each training its half one after another (a
  sweep without lock-step).

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

MODES = ("sequential", "lockstep", "lockstep-2w", "sequential-1t", "lockstep-1t", "sequential-2w")
N_TRAIN, N_VAL, D, K = 45_000, 5_000, 3072, 10


def sweep_configs(models: int, epochs: int, n_train: int, backend: str = "auto") -> list:
    """The lambda-search configurations of the first ``models`` coarse lambdas (cycled if more),
    shortened to ``epochs`` epochs of ``n_train`` images."""
    from fastnet.experiments import coarse_lambdas, search_config

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
        from fastnet.data import load_cifar10

        data = load_cifar10(data_spec.get("dir"), split="a3", n_val=N_VAL, dtype=np.float32, progress=False)
        n = data_spec.get("n_train")
        if n and n < data.X_train.shape[0]:
            data.X_train, data.y_train = data.X_train[:n], data.y_train[:n]
        return data
    return synthetic_data(data_spec.get("n_train", N_TRAIN), data_spec.get("n_val", N_VAL))


def train_sequential(cfgs, data) -> None:
    from fastnet.backends import resolve
    from fastnet.train import fit, new_network

    for cfg in cfgs:
        fit(new_network(cfg, data.X_train.shape[1], K), data, cfg, resolve(cfg.backend).ops, progress=False)


def train_lockstep(cfgs, data) -> None:
    from fastnet.backends import resolve
    from fastnet.lockstep import fit_lockstep
    from fastnet.train import new_network

    outcomes = fit_lockstep([new_network(cfg, data.X_train.shape[1], K) for cfg in cfgs], data, cfgs, resolve(cfgs[0].backend).ops)
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise failed[0]


def warm_up(cfgs, data) -> None:
    """A few steps of both ways of training on a slice of the data: Numba compiles or loads
    its cached kernels, BLAS and the allocator warm up, outside any timing."""
    small = SimpleNamespace(X_train=data.X_train[:400], y_train=data.y_train[:400], X_val=data.X_val[:100], y_val=data.y_val[:100],
                            label_names=data.label_names, source="warm-up")
    short = [replace(cfg, n_s=2) for cfg in cfgs[:2]]
    train_sequential(short, small)
    train_lockstep(short, small)


def _worker(conn, data_spec: dict, cfg_dicts: list, lockstep: bool) -> None:
    from fastnet.sweep import pin_threads

    pin_threads()
    from fastnet.backends import resolve
    from fastnet.train import TrainConfig

    cfgs = [TrainConfig.from_dict(d) for d in cfg_dicts]
    data = load(data_spec)
    resolve(cfgs[0].backend)
    warm_up(cfgs, data)
    conn.send("ready")
    conn.recv()
    t0 = time.perf_counter()
    (train_lockstep if lockstep else train_sequential)(cfgs, data)
    conn.send(time.perf_counter() - t0)
    conn.close()


class Workers:
    """Two (or ``n``) spawned, pinned processes that each train a share of the models once
    they are told to go; :meth:`run` returns the wall time from go to the last one done."""

    def __init__(self, cfgs, data_spec: dict, lockstep: bool, n: int = 2):
        ctx = multiprocessing.get_context("spawn")
        shares = [cfgs[i::n] for i in range(n)]
        self.conns, self.procs = [], []
        for share in shares:
            if not share:
                continue
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, data_spec, [c.to_dict() for c in share], lockstep), daemon=True)
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
        return Workers(cfgs, data_spec, lockstep=mode.startswith("lockstep")).run()
    import contextlib

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1) if mode.endswith("-1t") else contextlib.nullcontext():
        t0 = time.perf_counter()
        (train_lockstep if mode.startswith("lockstep") else train_sequential)(cfgs, data)
        return time.perf_counter() - t0
