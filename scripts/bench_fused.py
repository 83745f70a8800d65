"""The fused step of each compiled backend side by side: epochs of 450 steps of 100 real
CIFAR-10 images (uint8, normalised as gathered, the next batch gathered ahead), on one core and
on two, in interleaved rounds; prints the medians and the extension/Numba ratios.

    python scripts/bench_fused.py [--hidden 50,50] [--rounds 5]

Needs the data (FASTNET_DATA or ~/.cache/fastnet) and both backends. Each backend is warmed up
first (compiled or loaded from Numba's cache), so this measures the steady epoch only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastnet.backends import resolve
from fastnet.data.cifar10 import load_cifar10
from fastnet.model.network import init_network
from fastnet.training.fused import fused_step_for

BACKENDS = ("numba", "cython")
STEPS, BATCH = 450, 100


def epoch(data, hidden, backend: str, cores: int) -> float:
    """Seconds for one epoch of fused steps on ``cores`` cores."""
    X, y = data.X_train, data.y_train
    net = init_network(X.shape[1], hidden, 10, bn=True, dtype=np.float32, rng=np.random.default_rng(1))
    step = fused_step_for(net, resolve(backend).ops)
    order = np.concatenate([np.random.default_rng(0).permutation(len(y))] * 2)
    batches = [order[i * BATCH:(i + 1) * BATCH] for i in range(STEPS + 1)]
    if cores == 2:
        step.use_cores(2)
    Xb, yb = step.gather(X, y, batches[0])
    start = time.perf_counter()
    for s in range(STEPS):
        step.step(Xb, yb, 0.005, 0.01, checked=False, ahead=(X, y, batches[s + 1]))
        Xb, yb = step.gather(X, y, batches[s + 1])
    seconds = time.perf_counter() - start
    step.detach()
    return seconds


def timed(data, hidden, backend: str, cores: int) -> float:
    if cores == 1:
        with threadpool_limits(1, user_api="blas"):
            return epoch(data, hidden, backend, 1)
    return epoch(data, hidden, backend, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="50,50")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    data = load_cifar10(os.environ.get("FASTNET_DATA", os.path.expanduser("~/.cache/fastnet")), progress=False)
    for cores in (1, 2):
        for b in BACKENDS:
            timed(data, hidden, b, cores)  # warm up
    times: dict = {}
    for _ in range(args.rounds):
        for cores in (1, 2):
            for b in BACKENDS:
                times.setdefault((b, cores), []).append(timed(data, hidden, b, cores))
    for cores in (1, 2):
        n, c = (statistics.median(times[(b, cores)]) for b in BACKENDS)
        print(f"hidden {args.hidden}, {cores} core(s): numba {n:.3f} s, extension {c:.3f} s per epoch; extension/numba {c / n:.3f}")


if __name__ == "__main__":
    main()
