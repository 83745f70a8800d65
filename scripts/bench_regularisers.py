"""What the regularisers for long runs (issue 17) cost per step: the [512, 256] BN network with
augmentation on 100 real CIFAR-10 images a step, one BLAS thread -- the fused step (no
regulariser), the same configuration op by op (the fused step switched off), and each of label
smoothing, MixUp and dropout (op by op, as they run). Interleaved rounds; prints medians.

    python scripts/bench_regularisers.py [--hidden 512,256] [--rounds 5] [--steps 60]

Needs the data (FASTNET_DATA or ~/.cache/fastnet) and the extension.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fastnet.training.stepper as stepper_mod
from fastnet.backends import resolve
from fastnet.data.cifar10 import load_cifar10
from fastnet.training.config import TrainConfig, new_network, new_optimizer
from fastnet.training.regularisers import regulariser
from fastnet.training.stepper import Stepper, augmenter
from fastnet.util.parse import layer_sizes
from fastnet.util.threads import blas_threads

VARIANTS = {"none (fused)": {}, "none, op by op": {"op_by_op": True}, "label smoothing 0.1": {"label_smoothing": 0.1},
            "mixup 0.2": {"mixup": 0.2}, "dropout 0.1": {"dropout": 0.1}}


def ms_per_step(data, ops, hidden, kw: dict, steps: int, seed: int) -> tuple[float, str]:
    """Milliseconds per step (after 5 warm-up steps) and which step ran."""
    kw = dict(kw)
    op_by_op = kw.pop("op_by_op", False)
    cfg = TrainConfig(hidden=hidden, augment=True, backend="cython", **kw).validate()
    net = new_network(cfg, 3072, 10)
    real = stepper_mod.fused_step_for
    if op_by_op:
        stepper_mod.fused_step_for = lambda *a, **k: None
    try:
        st = Stepper(net, data.X_train, data.y_train, cfg.lam, ops, new_optimizer(cfg, net), augmenter(cfg), regularise=regulariser(cfg, net))
    finally:
        stepper_mod.fused_step_for = real
    rng = np.random.default_rng(seed)
    idxs = [rng.choice(data.X_train.shape[0], 100, replace=False) for _ in range(steps + 5)]
    for t in range(5):
        st(idxs[t], 0.01, t)
    t0 = time.perf_counter()
    for t in range(5, steps + 5):
        st(idxs[t], 0.01, t)
    seconds = time.perf_counter() - t0
    path = "fused" if st.fused is not None else "op by op"
    st.close()
    return seconds / steps * 1e3, path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=layer_sizes, default=(512, 256))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    data = load_cifar10(None, progress=False)
    ops = resolve("cython").ops
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    paths = {}
    with blas_threads(1):
        for r in range(args.rounds):
            for name, kw in VARIANTS.items():
                ms, paths[name] = ms_per_step(data, ops, args.hidden, kw, args.steps, r)
                times[name].append(ms)
    base = statistics.median(times["none (fused)"])
    for name, ms in times.items():
        m = statistics.median(ms)
        print(f"{name:22s} {paths[name]:9s} {m:6.1f} ms/step  x{m / base:.2f}   rounds {', '.join(f'{x:.1f}' for x in ms)}")


if __name__ == "__main__":
    main()
