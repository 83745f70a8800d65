#!/usr/bin/env python
"""The matrix-multiply providers of the fused step side by side: NumPy's OpenBLAS and Intel MKL.

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
   arrays, on one fixed batch (no gathers); from ``--steps`` steps per round, scaled to 450.

Every product goes through the provider's CBLAS ?gemm at its address (ctypes), as the fused
step calls it; BLAS threads are set with threadpoolctl, which reaches MKL's GNU OpenMP threads
too. Without MKL (``pip install 'fastnet[mkl]'``) only OpenBLAS is timed.
"""
from __future__ import annotations

import argparse
import datetime
import json
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
    ratio = f"  mkl/openblas {med['mkl'] / med['openblas']:.3f}" if "mkl" in med else ""
    return f"{label:<34s} {cells}{ratio}", med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per cell (default 5)")
    ap.add_argument("--steps", type=int, default=45, help="steps per round of the epoch floor, scaled to 450 (default 45)")
    ap.add_argument("--json", help="also write the medians here")
    args = ap.parse_args(argv)
    tables = gemm_choice.available()
    print(f"# bench_gemm {datetime.date.today()}  CPU: {cpu_model()}  load: {loadavg()}")
    for name in tables:
        version = providers.mkl_version() if name == "mkl" else next(
            (f"OpenBLAS {i.get('version')} ({i.get('architecture')})" for i in threadpool_info() if i.get("internal_api") == "openblas"), "")
        print(f"# {name}: {providers.library_path(name)}  {version}")
    if "mkl" not in tables:
        print("# mkl: not installed (pip install 'fastnet[mkl]'): OpenBLAS alone")
    print(f"# {args.rounds} interleaved rounds per row; medians; float32\n")
    out = {"cpu": cpu_model(), "date": str(datetime.date.today()), "first_layer": {}, "floor": {}}

    print("first layer's two products, batch 100, 1 thread (per step):")
    for label, hidden in NETS.items():
        m1 = hidden[0]
        runs = {name: gemm_choice.first_layer_products(tab, BATCH, D, m1, np.float32) for name, tab in tables.items()}
        with threadpool_limits(1, user_api="blas"):
            start = time.perf_counter()
            next(iter(runs.values()))()
            reps = max(1, int(0.1 / max(time.perf_counter() - start, 1e-6)))
            times = interleaved(runs, args.rounds, reps)
        line, med = fmt_row(f"  {label} (100x3072 -> {m1})", times, 1e3)
        print(line, flush=True)
        out["first_layer"][label] = med

    print(f"\nmatrix-multiply floor of an epoch (450 steps of batch 100; {args.steps} steps per round, scaled):")
    for threads in (1, 2):
        for label, hidden in NETS.items():
            runs = {name: floor_step(tab, hidden) for name, tab in tables.items()}
            with threadpool_limits(threads, user_api="blas"):
                times = interleaved(runs, args.rounds, args.steps)
            line, med = fmt_row(f"  {label}, {threads} thread{'s' if threads > 1 else ' '}", times, EPOCH_STEPS, "s")
            print(line, flush=True)
            out["floor"][f"{label} {threads}"] = med
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
