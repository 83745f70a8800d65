#!/usr/bin/env python
"""fastnet against its peers and the matrix-multiply floor: one table of epoch times and ratios.

    python scripts/bench_peers.py                 # full epochs (450 batches): ~3 minutes at 1 thread
                                                  # on an idle 2-core machine, far more under load
    python scripts/bench_peers.py --quick         # 10 % of an epoch, 1 repeat: a smoke test
    python scripts/bench_peers.py --json out.json --orientations --profile

For each network (3-layer [50, 50] and 9-layer [50, 30, 20, 20, 10, 10, 10, 10], with and
without batch norm) and each thread count (1 and 2), it trains one epoch of the default recipe
(batch 100, lambda 0.005, cyclic learning rate, float32, 45,000 synthetic rows of 3072
features gathered through one shuffled permutation; evaluation excluded) with:

* fastnet, per backend (numpy, numba, cython, and auto = what users get);
* PyTorch eager (if installed): ``nn.Sequential``, ``BatchNorm1d``, ``torch.optim.SGD`` with
  ``weight_decay=2 lam`` on the weight matrices only; ``torch.set_num_threads(threads)``;
* JAX (if installed): the whole epoch in one ``jax.jit`` (``lax.scan`` over batches), in a
  worker process per thread count (XLA reads its thread flags at start-up; 1 thread is
  ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``, and the worker pinned
  to one CPU, which those flags alone no longer ensure). Compilation is excluded: each worker
  compiles and runs one epoch before timing;
* the floor: only the unavoidable matrix products (forward, weight gradient, input gradient
  but for the first layer) into preallocated arrays, in each memory orientation of
  ``peers.LAYOUTS``; the table's "floor" is the fastest of them in this run;
* the MKL floor (if Intel MKL is installed, ``pip install 'fastnet[mkl]'``): the same products
  on MKL's ``cblas_sgemm`` with MKL's own OpenMP threads, in a worker process per thread count
  (fastnet runs MKL sequential, and MKL takes its threading layer once per process); column
  ``fl-mkl``, the fastest orientation.

BLAS threads are limited with threadpoolctl. All implementations of one (network, threads)
cell are timed round-robin, ``--repeats`` times (the starting implementation rotates), so that
load from other processes hits them alike; each reports the median epoch (``--min`` for the
minimum). Every repeat starts from the same initial parameters. Ratios are of this one run.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import peers  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

FASTNET = ("numpy", "numba", "cython", "auto")
NETS = {"3": peers.THREE, "9": peers.NINE, "wide": peers.WIDE}
JAX_FLAGS_1 = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


# --------------------------------------------------------------------------- environment


def versions() -> dict[str, str]:
    import numba

    from fastnet.backends import info

    v = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('threading_layer')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    v["blas"] = "; ".join(blas) or "?"
    v["fastnet backends"] = "; ".join(b.describe() for b in info())
    if peers.torch_available() is None:
        import torch

        v["torch"] = f"{torch.__version__} (intra-op default {torch.get_num_threads()} threads)"
    if peers.jax_available() is None:
        import importlib.metadata as md

        v["jax"] = f"{md.version('jax')} / jaxlib {md.version('jaxlib')}"
    return v


# ------------------------------------------------------------------------------- workers


class Worker:
    """A process of its own at a fixed thread count, driven by JSON lines on its stdin/stdout:
    ``jax`` (XLA reads its thread flags at start-up) or ``mkl-floor`` (the floor on MKL's own
    threads, which this process cannot have: fastnet has set MKL sequential here)."""

    def __init__(self, kind: str, threads: int, n_train: int, seed: int):
        env = dict(os.environ)
        if kind == "jax":
            if threads == 1:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JAX_FLAGS_1).strip()
            env["JAX_PLATFORMS"] = "cpu"
        self.kind = kind
        # XLA's one-thread flags no longer hold JAX 0.10 to one core (it ran at 1.6-1.9 CPU seconds
        # per second with them): its one-thread worker is also pinned to one CPU.
        pin = kind == "jax" and threads == 1 and hasattr(os, "sched_setaffinity")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--_worker", f"{kind}:{threads}", "--_n-train", str(n_train), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
            preexec_fn=(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if pin else None)
        self.ask({"cmd": "ping"})

    def ask(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} worker stopped (exit code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.kind} worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask({"cmd": "quit"})
            except (RuntimeError, OSError, ValueError):
                pass
            self.proc.wait(timeout=30)


def worker_impls(kind: str, threads: int):
    """``impls(spec)``: the implementations a worker of ``kind`` times for one network (MKL is
    set up once, for the worker's thread count)."""
    if kind == "jax":
        return lambda spec: [peers.JaxImpl(spec)]
    mm = peers.cblas_matmul(peers.threaded_mkl(threads))
    return lambda spec: [peers.FloorImpl(spec, lay, mm=mm, prefix="floor-mkl") for lay in peers.LAYOUTS]


def worker_main(kind: str, threads: int, n_train: int, seed: int) -> None:
    """The worker's loop: setup (build, compile and run one epoch of each implementation), run
    (one timed epoch of one of them), quit."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    X, y = peers.make_data(n_train, seed=seed)
    make_impls = worker_impls(kind, threads)
    impls, plan, init = {}, None, None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "ping":
                reply = {"ok": True}
            elif msg["cmd"] == "setup":
                spec = peers.Spec(hidden=tuple(msg["hidden"]), bn=msg["bn"])
                plan = peers.make_plan(spec, n_train, msg["n_batches"], seed=seed)
                init = peers.initial_network(spec, seed)
                impls = {impl.name: impl for impl in make_impls(spec)}
                t0 = time.perf_counter()
                for impl in impls.values():
                    impl.reset(init)
                    impl.warmup(X, y, plan)
                reply = {"ok": True, "names": list(impls), "compile_and_first_epoch": time.perf_counter() - t0}
            elif msg["cmd"] == "run":
                impl = impls[msg["name"]]
                impl.reset(init)
                impl.sync()

                def run():
                    impl.epoch(X, y, plan)
                    impl.sync()

                wall, cpu = peers.timed(run)
                reply = {"wall": wall, "cpu": cpu}
            elif msg["cmd"] == "quit":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}"}
        except Exception as exc:  # reported to the parent, which stops with it
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Remote:
    """One implementation of a worker, with the interface the timing loop uses."""

    def __init__(self, worker: Worker, name: str):
        self.worker, self.name = worker, name

    def run(self) -> tuple[float, float]:
        r = self.worker.ask({"cmd": "run", "name": self.name})
        return r["wall"], r["cpu"]


def remotes(worker: Worker, spec: peers.Spec, n_batches: int) -> list[Remote]:
    """The worker set up for one network, one runner per implementation it timed."""
    names = worker.ask({"cmd": "setup", "hidden": list(spec.hidden), "bn": spec.bn, "n_batches": n_batches})["names"]
    return [Remote(worker, name) for name in names]


# -------------------------------------------------------------------------------- timing


class Local:
    """An in-process implementation: reset (untimed) then one timed epoch."""

    def __init__(self, impl: peers.Impl, X, y, plan, init, threads: int):
        self.impl, self.X, self.y, self.plan, self.init, self.threads = impl, X, y, plan, init, threads
        self.name = impl.name
        impl.reset(init)
        impl.warmup(X, y, plan)

    def run(self) -> tuple[float, float]:
        self.impl.reset(self.init)

        def epoch():
            self.impl.epoch(self.X, self.y, self.plan)
            self.impl.sync()

        return peers.timed(epoch)


class Gather:
    """The batch gathers of the epoch alone (shown beside the floor, which has none)."""

    name = "gather"

    def __init__(self, X, y, plan):
        self.X, self.y, self.plan = X, y, plan

    def run(self):
        return peers.timed(peers.gather_seconds, self.X, self.y, self.plan)


_BYTES: dict = {}


def bytes_images(X):
    """X quantised to uint8 pixels, as fastnet.data.images.NormalisedImages normalising them back
    (values near X's; the speed depends only on the shapes). Made once per X."""
    from fastnet.data.images import NormalisedImages

    if id(X) not in _BYTES:
        U = np.clip(np.rint(X * 40.0 + 128.0), 0, 255).astype(np.uint8)
        mean = U.mean(axis=0, dtype=np.float64)
        std = U.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        _BYTES[id(X)] = NormalisedImages(U, mean, std, X.dtype)
    return _BYTES[id(X)]


# Seconds of rest before each timed epoch: the threads of the implementation timed before it
# spin for a while after their last task before they sleep (OpenBLAS's ~0.1 s, OpenMP's up to
# 0.2 s), and would take a core from whichever implementation runs next.
SETTLE = 0.3


def measure_cell(spec, threads, X, y, n_batches, args, workers) -> dict[str, peers.Timing]:
    """Every implementation on one (network, threads) cell, round-robin."""
    plan = peers.make_plan(spec, X.shape[0], n_batches, seed=args.seed)
    init = peers.initial_network(spec, args.seed)
    runners = []
    for lay in peers.LAYOUTS:
        runners.append(Local(peers.FloorImpl(spec, lay), X, y, plan, init, threads))
    runners.append(Gather(X, y, plan))
    for b in FASTNET:
        if b in args.skip:
            continue
        runners.append(Local(peers.FastnetImpl(spec, b), X, y, plan, init, threads))
    if "auto" not in args.skip:
        # What fit runs on load_cifar10's data: the training images kept as uint8, normalised
        # as each batch is gathered (the other columns gather float32 rows).
        u8 = peers.FastnetImpl(spec, "auto")
        u8.name = "fastnet-auto-u8"
        runners.append(Local(u8, bytes_images(X), y, plan, init, threads))
    if "torch" not in args.skip and peers.torch_available() is None:
        runners.append(Local(peers.TorchImpl(spec, threads), X, y, plan, init, threads))
    for name in args.gemm:  # fastnet on uint8 images with a provider forced (--gemm), beside auto's
        forced = peers.FastnetImpl(spec, "auto", gemm=name)
        forced.name = f"fastnet-auto-u8[{name}]"
        runners.append(Local(forced, bytes_images(X), y, plan, init, threads))
        if args.bf16:  # and its bf16 run: the layers above the first on that provider
            forced16 = peers.FastnetImpl(spec, "cython", precision="bf16", gemm=name)
            forced16.name = f"fastnet-bf16-u8[{name}]"
            runners.append(Local(forced16, bytes_images(X), y, plan, init, threads))
    if args.bf16:  # fastnet's --precision bf16 on what fit runs (uint8 images), and PyTorch's autocast
        bf = peers.FastnetImpl(spec, "cython", precision="bf16")
        bf.name = "fastnet-bf16-u8"
        runners.append(Local(bf, bytes_images(X), y, plan, init, threads))
        if "torch" not in args.skip and peers.torch_available() is None:
            runners.append(Local(peers.TorchImpl(spec, threads, bf16=True), X, y, plan, init, threads))
    for (kind, t), worker in workers.items():  # JAX, and the floor on MKL's own threads
        if t == threads:
            runners += remotes(worker, spec, plan.n_batches)
    timings = {r.name: peers.Timing() for r in runners}
    for rep in range(args.repeats):
        k = rep % len(runners)
        for r in runners[k:] + runners[:k]:
            time.sleep(SETTLE)
            wall, cpu = r.run()
            timings[r.name].wall.append(wall)
            timings[r.name].cpu.append(cpu)
    for r in runners:
        timings[r.name].gemm = getattr(getattr(r, "impl", None), "resolved", None)
    return timings


# ------------------------------------------------------------------------------- report


def fmt(x: float, width: int = 7, digits: int = 3) -> str:
    return f"{'-':>{width}s}" if x is None or not math.isfinite(x) else f"{x:>{width}.{digits}f}"


def table(rows: list[dict], stat: str, n_batches: int) -> str:
    cols = ["floor", "floor*", "fl-mkl", "gather", "numpy", "numba", "cython", "auto", "auto-u8", "torch", "jax"]
    head = (f"{'network':16s}{'thr':>4s}{'load':>6s} " + " ".join(f"{c:>7s}" for c in cols)
            + " |" + " ".join(f"{c:>11s}" for c in ("auto/floor", "auto/torch", "auto/jax", "u8/floor", "u8/fl-mkl",
                                                    "u8/torch", "u8/jax")))
    lines = [f"epoch seconds ({stat} of repeats; {n_batches} batches of 100 per epoch), then ratios "
             "(< 1: fastnet faster)", head, "-" * len(head)]
    for r in rows:
        t = r["seconds"]
        fast = {b: t.get(f"fastnet-{b}") for b in FASTNET}
        u8 = t.get("fastnet-auto-u8")
        vals = [r["floor"], t.get("floor[rows/W(out,in)]"), r.get("floor_mkl"), t.get("gather"), *(fast[b] for b in FASTNET), u8,
                t.get("torch"), t.get("jax")]

        def ratio(a, b):
            return a / b if a is not None and b is not None and b > 0 else None

        ratios = [ratio(fast["auto"], r["floor"]), ratio(fast["auto"], t.get("torch")), ratio(fast["auto"], t.get("jax")),
                  ratio(u8, r["floor"]), ratio(u8, r.get("floor_mkl")), ratio(u8, t.get("torch")), ratio(u8, t.get("jax"))]
        lines.append(f"{r['label']:16s}{r['threads']:>4d}{r['load'].split()[0]:>6s} " + " ".join(fmt(v) for v in vals)
                     + " |" + " ".join(fmt(v, 11, 2) for v in ratios))
    lines.append("floor = fastest memory orientation of the products alone (see --orientations); floor* = fastnet's "
                 "orientation (rows, W as (m_out, m_in)); fl-mkl = the floor on Intel MKL's own OpenMP threads (a worker "
                 "process; fastest orientation); gather = X[idx], y[idx] alone; auto-u8 = auto on uint8 images "
                 "normalised as gathered, what fit runs on load_cifar10's training set; "
                 "load = 1-minute load average after the cell (above the thread count: other processes took cores)")
    return "\n".join(lines)


def bf16_table(rows: list[dict]) -> str:
    """--bf16: fastnet's bf16 epoch beside its float32 one (auto-u8, what fit runs), the floor
    and PyTorch in float32 and under autocast bf16."""
    cols = ("auto-u8", "bf16", "floor", "torch", "torch16")
    keys = ("fastnet-auto-u8", "fastnet-bf16-u8", None, "torch", "torch-bf16")
    head = (f"{'network':16s}{'thr':>4s} " + " ".join(f"{c:>7s}" for c in cols) + " |"
            + " ".join(f"{c:>12s}" for c in ("u8/bf16", "bf16/floor", "bf16/torch16", "torch/torch16")))
    lines = ["bf16: epoch seconds and ratios (> 1 in u8/bf16: bf16 faster than fastnet's float32; < 1 elsewhere: fastnet bf16 faster)",
             head, "-" * len(head)]
    for r in rows:
        t = r["seconds"]
        v = [r["floor"] if k is None else t.get(k) for k in keys]

        def ratio(a, b):
            return a / b if a is not None and b is not None and b > 0 else None

        ratios = [ratio(v[0], v[1]), ratio(v[1], v[2]), ratio(v[1], v[4]), ratio(v[3], v[4])]
        lines.append(f"{r['label']:16s}{r['threads']:>4d} " + " ".join(fmt(x) for x in v) + " |" + " ".join(fmt(x, 12, 2) for x in ratios))
    return "\n".join(lines)


def gemm_table(rows: list[dict], names: list[str]) -> str:
    """--gemm: fastnet on uint8 images with each provider forced (and its bf16 run, with
    --bf16), beside auto's choice (named) and the floor (NumPy's OpenBLAS, fastest orientation)."""
    forced = [(n, f"fastnet-auto-u8[{n}]") for n in names]
    forced += [(f"bf16 {n}", f"fastnet-bf16-u8[{n}]") for n in names if any(f"fastnet-bf16-u8[{n}]" in r["seconds"] for r in rows)]
    cols = ["auto-u8", *(label for label, _ in forced), "floor"]
    head = (f"{'network':16s}{'thr':>4s} {'auto is':>16s} " + " ".join(f"{c:>15s}" for c in cols) + " |"
            + " ".join(f"{label + '/auto':>20s}" for label, _ in forced) + f"{'auto/floor':>12s}")
    lines = ["--gemm: epoch seconds of fastnet-auto-u8 per matrix-multiply provider (> 1 in X/auto: auto's choice faster)",
             head, "-" * len(head)]
    for r in rows:
        t = r["seconds"]
        auto = t.get("fastnet-auto-u8")
        vals = [t.get(key) for _, key in forced]
        ratios = [v / auto if v is not None and auto else None for v in vals]
        lines.append(f"{r['label']:16s}{r['threads']:>4d} {str(r.get('gemm', {}).get('fastnet-auto-u8')):>16s} "
                     + " ".join(fmt(v, 15) for v in (auto, *vals, r["floor"])) + " |" + " ".join(fmt(x, 20, 2) for x in ratios)
                     + fmt(auto / r["floor"] if auto and r["floor"] else None, 12, 2))
    return "\n".join(lines)


def orientations(spec, X, threads: int, reps: int) -> tuple[str, dict]:
    """Per product, microseconds per call in each layout (min over rounds)."""
    with threadpool_limits(threads):
        t = peers.time_products(spec, X, reps=reps, rounds=5)
    lines = [f"orientation of each product, {spec.label}, {threads} thread(s): microseconds per call (min of 5 rounds "
             f"of {reps}); (M, K, N) of the canonical product"]
    lines.append(f"{'layer product':22s}{'(M, K, N)':>18s} " + " ".join(f"{lay:>15s}" for lay in peers.LAYOUTS) + "   best/worst")
    totals = defaultdict(float)
    data = []
    for l, what, shape in peers.product_shapes(spec):
        vals = [t[(l, what, lay)] for lay in peers.LAYOUTS]
        for lay, v in zip(peers.LAYOUTS, vals):
            totals[lay] += v
        data.append({"layer": l, "product": what, "shape": shape, "us": dict(zip(peers.LAYOUTS, [v * 1e6 for v in vals]))})
        lines.append(f"{f'{l} {what}':22s}{str(shape):>18s} " + " ".join(f"{v * 1e6:>15.1f}" for v in vals)
                     + f"   {min(vals) / max(vals):>10.2f}")
    mixed = sum(min(t[(l, w, lay)] for lay in peers.LAYOUTS) for l, w, _ in peers.product_shapes(spec))
    lines.append(f"{'sum per step':40s} " + " ".join(f"{totals[lay] * 1e6:>15.1f}" for lay in peers.LAYOUTS)
                 + f"   per-product best (mixed): {mixed * 1e6:.1f}")
    return "\n".join(lines), {"label": spec.label, "threads": threads, "products": data,
                              "sum_us": {k: v * 1e6 for k, v in totals.items()}, "mixed_us": mixed * 1e6}


# ------------------------------------------------------------------------------- profile


def profile(spec, X, y, n_batches: int, threads: int, seed: int) -> tuple[str, dict]:
    """Where fastnet's epoch time goes, per backend: per op (timed wrappers), the gather, the
    Python around them, against the floor; then cProfile's top functions for each backend."""
    from fastnet.backends import OPS

    plan = peers.make_plan(spec, X.shape[0], n_batches, seed=seed)
    init = peers.initial_network(spec, seed)
    out, data = [], {}
    with threadpool_limits(threads):
        floor = peers.FloorImpl(spec, "rows/W(out,in)")
        floor.warmup(X, y, plan)
        floor_s = min(peers.timed(floor.epoch, X, y, plan)[0] for _ in range(3))
        gather_s = min(peers.timed(peers.gather_seconds, X, y, plan)[0] for _ in range(3))
        for b in ("numpy", "numba", "cython"):
            impl = peers.FastnetImpl(spec, b)
            impl.reset(init)
            impl.warmup(X, y, plan)
            plain = []
            for _ in range(3):
                impl.reset(init)
                plain.append(peers.timed(impl.epoch, X, y, plan)[0])
            acc, calls = defaultdict(float), defaultdict(int)
            real = impl.ops

            def wrap(name, f):
                def g(*a, **k):
                    t0 = time.perf_counter()
                    r = f(*a, **k)
                    acc[name] += time.perf_counter() - t0
                    calls[name] += 1
                    return r
                return g

            impl.ops = SimpleNamespace(**{op: wrap(op, getattr(real, op)) for op in OPS})
            wrapped, best_acc, best_calls = math.inf, None, None
            for _ in range(3):  # keep the per-op times of the fastest of three epochs
                acc.clear()
                calls.clear()
                impl.reset(init)
                w = peers.timed(impl.epoch, X, y, plan)[0]
                if w < wrapped:
                    wrapped, best_acc, best_calls = w, dict(acc), dict(calls)
            acc, calls = defaultdict(float, best_acc), defaultdict(int, best_calls)
            # the wrappers' own cost, measured on a no-op: subtracted from the Python share
            noop = wrap("_noop", lambda: None)
            t0 = time.perf_counter()
            for _ in range(10000):
                noop()
            per_wrap = (time.perf_counter() - t0) / 10000
            n_calls = sum(v for k, v in calls.items() if k != "_noop")
            epoch_s = float(min(plain))
            ops_s = sum(v for k, v in acc.items() if k != "_noop")
            python_s = max(wrapped - ops_s - gather_s - n_calls * per_wrap, 0.0)
            out.append(f"fastnet-{b}, {spec.label}, {threads} thread(s), {n_batches} steps (min of 3 epochs): epoch "
                       f"{epoch_s:.3f} s (with timers {wrapped:.3f} s); floor* {floor_s:.3f} s, gather {gather_s:.3f} s")
            out.append(f"  {'op':24s}{'calls/step':>11s}{'us/call':>9s}{'us/step':>9s}{'share':>7s}")
            rows = sorted(((k, v) for k, v in acc.items() if k != "_noop"), key=lambda kv: -kv[1])
            for k, v in rows:
                out.append(f"  {k:24s}{calls[k] / n_batches:>11.1f}{v / calls[k] * 1e6:>9.1f}{v / n_batches * 1e6:>9.1f}"
                           f"{v / wrapped:>7.1%}")
            lin = acc["linear_forward"] + acc["linear_backward"]
            out.append(f"  {'gather X[idx], y[idx]':24s}{2:>11.1f}{gather_s / n_batches / 2 * 1e6:>9.1f}"
                       f"{gather_s / n_batches * 1e6:>9.1f}{gather_s / wrapped:>7.1%}")
            out.append(f"  {'python (network, train)':24s}{'':>11s}{'':>9s}{python_s / n_batches * 1e6:>9.1f}"
                       f"{python_s / wrapped:>7.1%}")
            out.append(f"  matmul share: linear ops {lin / wrapped:.1%} of the epoch; the products alone (floor*) "
                       f"{floor_s / wrapped:.1%}; linear ops cost {lin / floor_s:.2f} x their products")
            data[b] = {"epoch_s": epoch_s, "wrapped_s": wrapped, "floor_s": floor_s, "gather_s": gather_s,
                       "python_s": python_s, "ops": {k: {"calls": calls[k], "s": v} for k, v in rows}}
            prof = cProfile.Profile()
            impl.ops = real
            impl.reset(init)
            prof.enable()
            impl.epoch(X, y, plan)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(12)
            top = [ln for ln in s.getvalue().splitlines() if ln.strip()][-13:]
            out.append("  cProfile, top 12 by own time:")
            out.extend("    " + ln for ln in top)
    return "\n".join(out), data


def _numpy_sgemm():
    """NumPy's own BLAS ``sgemm`` (row-major), as the fused step calls it
    (:mod:`fastnet.backends.blas`), or None if not found.

    NumPy's ``matmul`` has no ``beta``; with it, the weight gradient, the L2 term and the SGD
    step of a layer become one call that overwrites W: W <- beta W + alpha op(A) op(B).
    """
    try:
        from fastnet.backends import blas
    except ImportError:  # no Numba
        return None
    if blas.BLAS is None:
        return None

    def sgemm(ta, tb, M, N, K, alpha, A, B, beta, C):
        # C (M, N) C-contiguous <- alpha op(A) op(B) + beta C; A, B C-contiguous float32
        blas.gemm(blas.BLAS, A, ta, B, tb, C, alpha, beta)

    return sgemm


def evidence(X, threads: int, rounds: int = 15) -> tuple[str, dict]:
    """Micro-measurements behind the opportunities: alternatives side by side, interleaved
    over ``rounds`` rounds of 45 calls each, minimum per call (the least disturbed round)."""
    from fastnet.backends import resolve

    rng = np.random.default_rng(1)
    n, d, m = 100, X.shape[1], 50
    lam, eta = 0.005, 0.01
    perm = rng.permutation(X.shape[0])
    idx = [perm[i * n : (i + 1) * n] for i in range(45)]
    Xb = [np.ascontiguousarray(X[i]) for i in idx]
    buf = np.empty((n, d), np.float32)
    W = (0.02 * rng.standard_normal((m, d))).astype(np.float32)
    WT = np.ascontiguousarray(W.T)
    G = rng.standard_normal((n, m), dtype=np.float32)
    S, dW = np.empty((n, m), np.float32), np.empty_like(W)
    small_X, small_W = rng.standard_normal((n, 10), dtype=np.float32), rng.standard_normal((10, 10), dtype=np.float32)
    small_S = np.empty((n, 10), np.float32)
    bn_S = rng.standard_normal((n, 10), dtype=np.float32)
    ones, zeros = np.ones(10, np.float32), np.zeros(10, np.float32)
    cases = {
        "gather: X[idx] (fastnet, torch)": lambda i: X[idx[i]],
        "gather: np.take(X, idx, out=buf)": lambda i: np.take(X, idx[i], axis=0, out=buf),
        "gather: contiguous block copy (bound)": lambda i: np.copyto(buf, X[i * n : (i + 1) * n]),
        "layer 1 fwd: X @ W.T (fastnet)": lambda i: np.matmul(Xb[i], W.T, out=S),
        "layer 1 fwd: X @ WT, W stored (in,out)": lambda i: np.matmul(Xb[i], WT, out=S),
        "matmul (100,10)@(10,10) out= (call cost)": lambda i: np.matmul(small_X, small_W.T, out=small_S),
    }
    ops = {}
    for b in ("numpy", "numba", "cython"):
        backend = resolve(b)
        if backend.name == b:
            ops[b] = backend.ops
    for b, o in ops.items():
        def lin_sgd(i, o=o):
            g = o.linear_backward(G, Xb[i], W, lam, need_dX=False)
            o.sgd_update_inplace(W, g.dW, eta)

        cases[f"layer 1 dW+SGD: linear_backward + sgd ({b})"] = lin_sgd
    cases["layer 1 dW: product alone G.T @ X"] = lambda i: np.matmul(G.T, Xb[i], out=dW)
    sgemm = _numpy_sgemm()
    if sgemm is not None:
        def fused(i):  # W <- (1 - 2 lam eta) W - (eta / n) G^T X: gradient, L2 and SGD in one GEMM
            sgemm(True, False, m, d, n, -eta / n, G, Xb[i], 1 - 2 * lam * eta, W)

        cases["layer 1 dW+SGD fused: one sgemm, beta=1-2*lam*eta"] = fused
    for b, o in ops.items():
        cases[f"linear_forward (100,10)x(10,10) ({b})"] = lambda i, o=o: o.linear_forward(small_X, small_W)
    for b, o in ops.items():
        cases[f"bn_relu_forward_train (100,10) ({b})"] = lambda i, o=o: o.bn_relu_forward_train(bn_S, ones, zeros, 1e-8)
    best = {k: math.inf for k in cases}
    with threadpool_limits(threads):
        for f in cases.values():
            f(0)
        for _ in range(rounds):
            for k, f in cases.items():
                t0 = time.perf_counter()
                for i in range(45):
                    f(i)
                best[k] = min(best[k], (time.perf_counter() - t0) / 45)
    lines = [f"micro-measurements, {threads} thread(s): microseconds per call, min of {rounds} interleaved rounds of 45"]
    lines += [f"  {k:48s}{v * 1e6:>9.1f}" for k, v in best.items()]
    return "\n".join(lines), {k: v * 1e6 for k, v in best.items()}


# ---------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs-fraction", type=float, default=1.0, help="fraction of the 450 batches of an epoch to run (default 1)")
    p.add_argument("--quick", action="store_true", help="smoke test: --epochs-fraction 0.1 --repeats 1")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per implementation (default 3)")
    p.add_argument("--min", action="store_true", help="report the minimum of the repeats instead of the median")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--nets", default="3,9", help="comma-separated: 3, 9 (layers) and/or wide ([1024, 512, 256]) (default 3,9)")
    p.add_argument("--bn", choices=("both", "on", "off"), default="both")
    p.add_argument("--skip", default="", help="comma-separated implementations to leave out: "
                   "numpy,numba,cython,auto,torch,jax,floor-mkl")
    p.add_argument("--bf16", action="store_true", help="also fastnet --precision bf16 (cython, uint8 images; AVX512_BF16, or MKL's bf16 product, emulated on other CPUs) and "
                   "PyTorch under CPU autocast bf16: the columns bf16 and torch16, and a second table of their ratios")
    p.add_argument("--gemm", default="", help="comma-separated matrix-multiply providers (openblas, openblas-avx512, mkl): also "
                   "fastnet-auto-u8 with each forced, beside auto's choice")
    p.add_argument("--orientations", action="store_true", help="also time every product in every memory orientation")
    p.add_argument("--profile", action="store_true", help="also profile fastnet's epoch per backend (3-layer BN, 1 thread)")
    p.add_argument("--no-table", action="store_true", help="skip the main table (with --orientations / --profile)")
    p.add_argument("--json", metavar="PATH", help="write every measurement to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--_worker", help=argparse.SUPPRESS)  # kind:threads (Worker)
    p.add_argument("--_n-train", type=int, default=peers.N_TRAIN, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker is not None:
        kind, threads = args._worker.split(":")
        worker_main(kind, int(threads), args._n_train, args.seed)
        return 0
    if args.quick:
        args.epochs_fraction, args.repeats = min(args.epochs_fraction, 0.1), 1
    if not 0 < args.epochs_fraction <= 1:
        p.error("--epochs-fraction must be in (0, 1]")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    threads = [int(t) for t in args.threads.split(",") if t]
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    if any(n not in NETS for n in nets):
        p.error(f"--nets takes 3 and/or 9, got {args.nets!r}")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.gemm = [g.strip() for g in args.gemm.split(",") if g.strip()]
    bns = {"both": (True, False), "on": (True,), "off": (False,)}[args.bn]
    per_epoch = peers.N_TRAIN // 100
    n_batches = max(1, round(per_epoch * args.epochs_fraction))

    started = datetime.datetime.now().astimezone()
    meta = {"date": started.isoformat(timespec="seconds"), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "load_at_start": loadavg(), "versions": versions(), "n_batches": n_batches, "repeats": args.repeats,
            "stat": "min" if args.min else "median", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    print(f"fastnet peers benchmark, {meta['date']}")
    print(f"cpu: {meta['cpu']} ({meta['cpus']} CPUs); load average at start: {meta['load_at_start']}")
    for k, v in meta["versions"].items():
        print(f"  {k}: {v}")
    skipped = {}
    if peers.torch_available() is not None and "torch" not in args.skip:
        skipped["torch"] = peers.torch_available()
    if peers.jax_available() is not None and "jax" not in args.skip:
        skipped["jax"] = peers.jax_available()
    for k, v in skipped.items():
        print(f"  skipped {k}: {v}")
    print(flush=True)

    X, y = peers.make_data(seed=args.seed)
    workers: dict[tuple[str, int], Worker] = {}
    rows, results, extra = [], [], {}
    try:
        if "jax" not in args.skip and peers.jax_available() is None and not args.no_table:
            for t in threads:
                workers["jax", t] = Worker("jax", t, peers.N_TRAIN, args.seed)
        if "floor-mkl" not in args.skip and not args.no_table and peers.mkl_available() is None:
            for t in threads:
                workers["mkl-floor", t] = Worker("mkl-floor", t, peers.N_TRAIN, args.seed)
        for t in ([] if args.no_table else threads):
            with threadpool_limits(t):
                for n in nets:
                    for bn in bns:
                        spec = peers.Spec(hidden=NETS[n], bn=bn)
                        t0 = time.perf_counter()
                        timings = measure_cell(spec, t, X, y, n_batches, args, workers)
                        stat = (lambda tm: tm.best) if args.min else (lambda tm: tm.median)
                        seconds = {k: stat(v) for k, v in timings.items()}
                        floors = {k: v for k, v in seconds.items() if k.startswith("floor[")}
                        best_floor = min(floors, key=floors.get)
                        mkl_floors = [v for k, v in seconds.items() if k.startswith("floor-mkl[")]
                        rows.append({"label": spec.label, "threads": t, "seconds": seconds,
                                     "floor": floors[best_floor], "floor_layout": best_floor,
                                     "floor_mkl": min(mkl_floors) if mkl_floors else None, "load": loadavg(),
                                     "gemm": {k: v.gemm for k, v in timings.items() if v.gemm}})
                        for k, v in timings.items():
                            results.append({"network": spec.label, "hidden": list(spec.hidden), "bn": bn, "threads": t,
                                            "impl": k, "wall": v.wall, "cpu": v.cpu, "median": v.median,
                                            "min": v.best, "cpu_per_wall": v.cpu_per_wall})
                        print(f"  measured {spec.label}, {t} thread(s) in {time.perf_counter() - t0:.0f} s "
                              f"(fastest floor: {best_floor}; load {loadavg()})", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.close()

    if rows:
        print(table(rows, meta["stat"], n_batches))
        if args.bf16:
            print()
            print(bf16_table(rows))
        if args.gemm:
            print()
            print(gemm_table(rows, args.gemm))
        print()
        print("cpu/wall (process CPU seconds per wall second, median; ~1 = one thread busy):")
    for t in (threads if rows else []):
        line = [f"{r['impl']}={r['cpu_per_wall']:.2f}" for r in results
                if r["threads"] == t and r["network"] == results[0]["network"] and not r["impl"].startswith("floor[")]
        print(f"  {t} thread(s), {results[0]['network']}: " + ", ".join(line))
    if args.orientations:
        extra["orientations"] = []
        for t in threads:
            text, d = orientations(peers.Spec(hidden=peers.NINE), X, t, reps=100 if args.quick else 300)
            print()
            print(text)
            extra["orientations"].append(d)
    if args.profile:
        text, d = profile(peers.Spec(), X, y, n_batches, 1, args.seed)
        print()
        print(text)
        extra["profile"] = d
        extra["evidence"] = {}
        for t in threads:
            text, d = evidence(X, t, rounds=5 if args.quick else 15)
            print()
            print(text)
            extra["evidence"][t] = d
    meta["load_at_end"] = loadavg()
    print(f"\nload average at end: {meta['load_at_end']}; {args.repeats} repeat(s), {meta['stat']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "table": rows, "results": results, **extra}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
