#!/usr/bin/env python
"""The matrix-multiply providers of the fused step side by side: NumPy's OpenBLAS, OpenBLAS on its
AVX-512 kernels (where the CPU has AVX-512) and Intel MKL.

    python scripts/bench_gemm.py                  # 5 rounds, floor over 45 steps per round (~1 minute)
    python scripts/bench_gemm.py --rounds 9 --steps 450   # the floor of whole epochs
    python scripts/bench_gemm.py --json out.json

Two tables, each provider timed in interleaved rounds (the provider that starts a round
alternates, so load from other processes hits both alike), medians per provider and their ratio:

1. the first layer's two products of a step at batch 100 on one BLAS thread -- the forward
   (100 x 3072) @ (3072 x m1) and the weight gradient folded into the update,
   W1t = keep W1t - step X^T G, (3072 x 100) @ (100 x m1) with beta -- for m1 = 50 ([50, 50])
   and 1024 ([1024, 512, 256]): what ``--gemm auto`` measures (fastnet/backends/gemm_choice.py);
2. the matrix-multiply floor of an epoch (450 steps of batch 100) on 1 and 2 BLAS threads: every
   product a step cannot avoid (each layer's forward and weight-gradient update, the input
   gradient of every layer but the first) in the fused step's orientation, into preallocated
   arrays, on one fixed batch (no gathers); from ``--steps`` steps per round, scaled to 450;
3. the extension's whole fused step (BN networks, 1 core, and 2 cores with the step's own
   split) on each provider: what a run's training steps cost (``--fused 0`` skips it).

Each row is measured in a process of its own, as a run would be: OpenBLAS's small products are
~1.5x faster once its process has run a wide one (100 x 3072 x 1024) or one on two threads, so
a [50, 50] row measured after such a row would not show what a [50, 50] run on one thread sees;
the row "after one 1024-wide product" shows that state; ``--gemm auto`` measures in the run's
own process before its first step, as its steps will find OpenBLAS.
Every product goes through the provider's CBLAS ?gemm at its address (ctypes), as the fused
step calls it; BLAS threads are set with threadpoolctl. MKL runs sequential (fastnet's
setting, fastnet/backends/providers.py), so its 2-thread floor is its 1-thread floor. Without
MKL (``pip install 'fastnet[mkl]'``) it is left out; so is ``openblas-avx512`` on a CPU without
AVX-512. Each other provider's ratio to NumPy's OpenBLAS ends its row.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from fastnet.backends import gemm_choice, providers  # noqa: E402

NETS = {"[50, 50]": (50, 50), "[1024, 512, 256]": (1024, 512, 256)}
D, K, BATCH, EPOCH_STEPS = 3072, 10, 100, 450


def floor_step(tab, hidden, dtype=np.float32, seed=0):
    """``step()``: one step's unavoidable products for the network [D, *hidden, K] by ``tab``."""
    rng = np.random.default_rng(seed)
    sizes = [D, *hidden, K]
    call = gemm_choice.gemm_caller(tab, dtype)
    Xb = rng.standard_normal((BATCH, D)).astype(dtype)
    W1t = (0.01 * rng.standard_normal((D, sizes[1]))).astype(dtype)
    Ws = [(0.01 * rng.standard_normal((o, i))).astype(dtype) for i, o in zip(sizes[1:-1], sizes[2:])]
    Xs = [rng.standard_normal((BATCH, m)).astype(dtype) for m in sizes[1:-1]]  # each hidden layer's output
    Ss = [np.empty((BATCH, m), dtype) for m in sizes[1:]]
    Gs = [rng.standard_normal((BATCH, m)).astype(dtype) for m in sizes[1:]]
    dXs = [np.empty((BATCH, m), dtype) for m in sizes[1:-1]]
    keep, step = 1.0, -1e-7

    def run():
        call(Xb, False, W1t, Ss[0], 1.0, 0.0)  # X W1^T, W1^T stored
        for l, W in enumerate(Ws):
            call(Xs[l], False, W, Ss[l + 1], 1.0, 0.0, trans_b=True)  # X W^T
        for l in range(len(Ws) - 1, -1, -1):
            call(Gs[l + 1], False, Ws[l], dXs[l], 1.0, 0.0)  # G W: the input gradient
            call(Gs[l + 1], True, Xs[l], Ws[l], step, keep)  # W = keep W - step G^T X
        call(Xb, True, Gs[0], W1t, step, keep)  # the first layer: no input gradient

    return run


def fused_steps(tables, hidden, cores: int, rounds: int, steps: int):
    """Seconds per step of the extension's fused step (BN network [D, *hidden, K]) on each
    provider, on ``cores`` cores (2: the step's own split, BLAS on one thread per core), on
    batches gathered from 5,000 random rows; None without the extension."""
    from fastnet.backends import load
    from fastnet.model.network import init_network
    from fastnet.training.fused import fused_step_for

    backend = load("cython")
    if not backend.available or backend.ops.fused_step is None:
        return None
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5000, D)).astype(np.float32), rng.integers(0, K, 5000)
    batches = [rng.integers(0, 5000, BATCH) for _ in range(steps)]
    with threadpool_limits(cores, user_api="blas"):
        fused = {}
        for name in tables:
            net = init_network(D, hidden, K, bn=True, dtype=np.float32, rng=np.random.default_rng(1))
            fused[name] = fused_step_for(net, backend.ops, gemm=name)
            fused[name].use_cores(cores)

        def runner(f):
            def run():
                for idx in batches:
                    Xb, yb = f.gather(X, y, idx)
                    f.step(Xb, yb, 0.005, 0.01, checked=False)
            return run

        times = interleaved({name: runner(f) for name, f in fused.items()}, rounds, 1)
        for f in fused.values():
            f.detach()
    return {name: [t / steps for t in ts] for name, ts in times.items()}


def interleaved(runs: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each of ``runs``, ``rounds`` rounds of ``reps`` calls, interleaved."""
    for run in runs.values():
        run()  # warm: MKL sets itself up at its first call
    times = {name: [] for name in runs}
    order = list(runs)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(reps):
                runs[name]()
            times[name].append((time.perf_counter() - start) / reps)
    return times


def fmt_row(label, times, scale=1.0, unit="ms"):
    med = {k: float(np.median(v)) * scale for k, v in times.items()}
    cells = "  ".join(f"{k} {med[k]:8.3f} {unit} (rounds {' '.join(f'{x * scale:.3g}' for x in times[k])})" for k in med)
    ratio = "".join(f"  {k}/openblas {med[k] / med['openblas']:.3f}" for k in med if k != "openblas" and "openblas" in med)
    return f"{label:<34s} {cells}{ratio}", med


CELLS = {  # kind: the row's label
    "first": "first layer's 2 products, 1 thread",
    "first-warm": "  the same after one 1024-wide product",
    "floor 1": "epoch floor, 1 thread",
    "floor 2": "epoch floor, 2 threads",
    "fused 1": "fused step, 1 core",
    "fused 2": "fused step, 2 cores",
}


def measure_cell(label: str, kind: str, args):
    """One row (``kind`` of :data:`CELLS`) for one network, in this process: (line, medians)."""
    tables = gemm_choice.available()
    hidden = NETS[label]
    if kind.startswith("first"):
        runs = {name: gemm_choice.first_layer_products(tab, BATCH, D, hidden[0], np.float32) for name, tab in tables.items()}
        with threadpool_limits(1, user_api="blas"):
            if kind == "first-warm":  # OpenBLAS's fast state (gemm_choice.measure's comment)
                for tab in tables.values():
                    gemm_choice.first_layer_products(tab, BATCH, D, 1024, np.float32)()
            start = time.perf_counter()
            next(iter(runs.values()))()
            reps = max(1, int(0.1 / max(time.perf_counter() - start, 1e-6)))
            times = interleaved(runs, args.rounds, reps)
        return fmt_row(f"  {CELLS[kind]}", times, 1e3)
    n = int(kind.split()[1])
    if kind.startswith("floor"):
        runs = {name: floor_step(tab, hidden) for name, tab in tables.items()}
        with threadpool_limits(n, user_api="blas"):
            times = interleaved(runs, args.rounds, args.steps)
        return fmt_row(f"  {CELLS[kind]}", times, EPOCH_STEPS, "s")
    times = fused_steps(tables, hidden, n, args.rounds, args.fused)
    if times is None:
        return "  (the extension is not built: no fused step)", {}
    return fmt_row(f"  {CELLS[kind]}", times, 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell (default 5)")
    ap.add_argument("--steps", type=int, default=45, help="steps per round of the epoch floor, scaled to 450 (default 45)")
    ap.add_argument("--fused", type=int, default=20, help="steps per round of the fused step per provider (0: skip those rows; default 20)")
    ap.add_argument("--json", help="also write the medians here")
    ap.add_argument("--cell", nargs=2, metavar=("NET", "KIND"), help=argparse.SUPPRESS)  # one row, in this process (the worker)
    args = ap.parse_args(argv)
    if args.cell:
        line, med = measure_cell(*args.cell, args)
        print(line)
        print("JSON " + json.dumps(med))
        return 0
    tables = gemm_choice.available()
    print(f"# bench_gemm {datetime.date.today()}  CPU: {cpu_model()}  load: {loadavg()}")
    for name in tables:
        path = providers.library_path(name)
        version = providers.mkl_version() if name == "mkl" else next(
            (f"OpenBLAS {i.get('version')} ({i.get('architecture')} kernels)" for i in threadpool_info() if i.get("filepath") == path), "")
        print(f"# {name}: {path}  {version}")
    if "mkl" not in tables:
        print("# mkl: not installed (pip install 'fastnet[mkl]'): OpenBLAS alone")
    print(f"# {args.rounds} interleaved rounds per row, medians, float32, batch 100; floor: {args.steps} steps per round scaled to an "
          f"epoch of {EPOCH_STEPS}; fused step: {args.fused} steps per round, BN network. Each row in a fresh process.")
    out = {"cpu": cpu_model(), "date": str(datetime.date.today()), "load": loadavg(), "nets": {}}
    for label in NETS:
        print(f"\n{label}:", flush=True)
        for kind in CELLS:
            if kind.startswith("fused") and not args.fused:
                continue
            # Every row in a process of its own, as a run is: OpenBLAS 0.3.31's small products run
            # ~1.5x faster once its process has made a wide product (N ~ 1024) or one on two
            # threads, so a row measured after such a row would not be what a run sees.
            cmd = [sys.executable, __file__, "--cell", label, kind, "--rounds", str(args.rounds), "--steps", str(args.steps), "--fused", str(args.fused)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return proc.returncode
            for line in proc.stdout.splitlines():
                if line.startswith("JSON "):
                    out["nets"].setdefault(label, {})[kind] = json.loads(line[5:])
                else:
                    print(line, flush=True)
    print(f"\n# load after: {loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
