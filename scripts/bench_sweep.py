#!/usr/bin/env python
"""Throughput of a lambda sweep of 8 models: one after another, in lock-step, in lock-step on 2 workers, and its floor.

    python scripts/bench_sweep.py                # real CIFAR-10 if found, else synthetic; 3 repeats
    python scripts/bench_sweep.py --quick        # 9,000 images, 1 repeat: a smoke test
    python scripts/bench_sweep.py --synthetic --repeats 5 --json out.json

The sweep is the lambda-search preset's (3-layer [50, 50] BN, batch 100, cyclic eta, float32,
the coarse grid's 8 lambdas) on 45,000 training and 5,000 validation images, each model
trained ``--epochs`` epochs and evaluated after each on all of them, as ``fit`` does. The modes
(bench/sweep_modes.py): ``sequential`` (fit after fit in this process at this process's BLAS
thread setting -- the default unless ``--threads`` or OPENBLAS_NUM_THREADS say otherwise),
``lockstep`` (fastnet.training.lockstep.fit_lockstep of all 8 here), ``lockstep-2w`` (2 pinned worker
processes, 4 models each in lock-step: what ``fastnet sweep`` and the lambda search do by
default on 2 cores) and ``sequential-2w`` (the same workers, one model after another: a sweep
with ``--no-lockstep``). The modes are timed round-robin, the first mode rotating from repeat
to repeat, so load from other processes hits them alike; each mode's median wall time gives
its throughput in model-epochs per second, and the ratios to ``sequential`` are of this one run
(also of the fastest repeats: other processes only ever add time). ``sequential-1t`` and
``lockstep-1t`` are the in-process modes with BLAS on one thread, to separate what the thread
setting does from what lock-step does; ``floor-2w`` runs only the sweep's matrix products on
the two workers (sweep_modes.FloorProducts), so ``sequential`` / ``floor-2w`` is the most any
way of training the sweep could gain over one after another.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import sweep_modes as sm  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402


def find_real(data_dir) -> str | None:
    from fastnet.data.fetch import find_cifar10
    from fastnet.errors import FastnetError

    try:
        return str(find_cifar10(data_dir))
    except FastnetError:
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1, help="epochs per model (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default=",".join(sm.MODES), help=f"comma-separated subset of {', '.join(sm.MODES)}")
    p.add_argument("--threads", type=int, help="BLAS threads of this process (default: the library's default)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--data-dir", help="where CIFAR-10 is (default: the usual places)")
    p.add_argument("--synthetic", action="store_true", help="random arrays of CIFAR-10's shape instead of the real images")
    p.add_argument("--quick", action="store_true", help="9,000 training images, 1 repeat")
    p.add_argument("--json", help="also write the measurements here")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(sm.MODES)
    if unknown:
        p.error(f"unknown modes {', '.join(sorted(unknown))}")
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    import numpy as np  # noqa: F401  (after the thread limit)
    from threadpoolctl import threadpool_info

    from fastnet.backends import resolve

    n_train = 9_000 if args.quick else sm.N_TRAIN
    repeats = 1 if args.quick else args.repeats
    real = None if args.synthetic else find_real(args.data_dir)
    spec = {"kind": "real", "dir": real, "n_train": n_train} if real else {"kind": "synthetic", "n_train": n_train}
    data = sm.load(spec)
    cfgs = sm.sweep_configs(args.models, args.epochs, data.X_train.shape[0], args.backend)
    backend = resolve(args.backend)
    threads = sorted({(i.get("internal_api"), i.get("num_threads")) for i in threadpool_info() if i.get("user_api") == "blas"})
    print(f"{datetime.date.today()}  {cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}; backend {backend.name}; "
          f"this process's BLAS threads {threads}; data {spec['kind']} ({data.X_train.shape[0]} train, {len(data.y_val)} val)", flush=True)
    print(f"sweep: {args.models} models x {args.epochs} epoch(s), 3-layer [50, 50] BN, lambdas {', '.join(f'{c.lam:.1e}' for c in cfgs)}", flush=True)
    sm.warm_up(cfgs, data)
    print(f"load average at start: {loadavg()}", flush=True)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(repeats):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        for mode in order:
            wall = sm.time_mode(mode, cfgs, data, spec)
            times[mode].append(wall)
            print(f"  repeat {r + 1}: {mode:14s} {wall:7.2f} s  (load {loadavg()})", flush=True)
    model_epochs = args.models * args.epochs
    base = statistics.median(times["sequential"]) if "sequential" in times else None
    best = min(times["sequential"]) if "sequential" in times else None
    print(f"\n{'mode':16s} {'model-epochs/s':>15s} {'vs sequential':>14s}   {'(fastest repeat)':>16s} {'vs sequential':>14s}")
    rows = []
    for mode in modes:
        med, low = statistics.median(times[mode]), min(times[mode])
        ratio = base / med if base else float("nan")
        ratio_min = best / low if best else float("nan")
        rows.append({"mode": mode, "median_seconds": med, "min_seconds": low, "seconds": times[mode], "model_epochs_per_second": model_epochs / med,
                     "ratio": ratio, "ratio_of_minima": ratio_min})
        print(f"{mode:16s} {model_epochs / med:15.3f} {ratio:13.2f}x   {model_epochs / low:16.3f} {ratio_min:13.2f}x")
    print(f"load average at end: {loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(datetime.date.today()), "cpu": cpu_model(), "cpus": os.cpu_count(),
                                               "backend": backend.name, "blas_threads": threads, "data": spec["kind"],
                                               "models": args.models, "epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
