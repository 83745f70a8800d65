"""Does ``--precision bf16`` cost accuracy? The assignment's default run (``fastnet-train`` with
no options: 3-layer [50, 50] BN, two cycles, 20 epochs) over several seeds, in float32 and in
bf16, one run at a time, alternating, on the real data; prints each run and the means.

    python scripts/bf16_accuracy.py --out /tmp/bf16acc --seeds 0,1,2,3,4

Each run is a run folder under ``--out`` (``fp32-s0``, ``bf16-s0``, ...); finished ones are read
back, not trained again. The table gives the test accuracy's mean and standard error per
precision, their difference, and the training seconds of each (same machine, interleaved).
Needs the cython backend, and a CPU with AVX512_BF16 or Intel MKL (whose bf16 product runs
them emulated elsewhere: the same arithmetic, not the speed). ``--gemm mkl`` runs both
precisions on MKL (its bf16 products in bf16). Each bf16 run prints whose products it ran.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan"))


def main() -> None:
    import fastnet
    from fastnet.util.cpu import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bf16-accuracy", help="folder of the run folders")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0..4)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads per run (default: the idle cores)")
    ap.add_argument("--gemm", default="auto", help="matrix-multiply provider of every run (default auto; mkl: MKL's bf16 products)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    results: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for seed in seeds:
        for precision in ("fp32", "bf16"):
            run_dir = out / f"{precision}-s{seed}"
            metrics = run_dir / "metrics.json"
            if not metrics.exists():
                fastnet.train(out=run_dir, overwrite=True, seed=seed, precision=precision, threads=args.threads,
                              backend="cython", gemm=args.gemm, progress=False, plots=False)
            m = json.loads(metrics.read_text())
            results[precision].append(m)
            whose = f", {m['bf16_products']}'s bf16 products" if "bf16_products" in m else ""
            print(f"seed {seed} {precision}: test {m['test_accuracy']:.4f}  val {m['val_accuracy']:.4f}  "
                  f"{m['train_seconds']:.1f} s training (gemm {m['gemm']}{whose})", flush=True)
    print(f"\n{cpu_model()}; default run, {len(seeds)} seeds")
    print("| precision | test accuracy (mean ± s.e.) | training s (median) |")
    print("| --- | --- | --- |")
    means = {}
    for precision, ms in results.items():
        mu, se = mean_se([m["test_accuracy"] for m in ms])
        means[precision] = mu
        train = statistics.median(m["train_seconds"] for m in ms)
        print(f"| {precision} | {100 * mu:.2f} ± {100 * se:.2f} % | {train:.2f} |")
    diffs = [b["test_accuracy"] - a["test_accuracy"] for a, b in zip(results["fp32"], results["bf16"])]
    d_mu, d_se = mean_se(diffs)
    speed = statistics.median(a["train_seconds"] / b["train_seconds"] for a, b in zip(results["fp32"], results["bf16"]))
    print(f"\nbf16 - fp32, same seed: {100 * d_mu:+.2f} ± {100 * d_se:.2f} points; "
          f"fp32 / bf16 training time, median over seeds: {speed:.2f}x")


if __name__ == "__main__":
    main()
