#!/usr/bin/env python
"""Peak memory of a whole ``fastnet-train`` run on the real CIFAR-10, against its budget.

    python scripts/measure_memory.py                      # 3-layer default net, short schedule
    python scripts/measure_memory.py --hidden 50,30,20,20,10,10,10,10 --threads 2
    python scripts/measure_memory.py --json out.json -- --backend numba

Issue #7's budget: peak resident memory <= 1.5 x (float32 training set + model), i.e.
1.5 x (45,000 x 3072 x 4 bytes + the parameters) = 830 MB for the default network.

Two child processes run the same ``fastnet-train`` command (by default ``--n-s 450 --cycles 1``:
two epochs, which reach every phase of a full run -- loading, training, evaluation, checkpoints,
the test evaluation, model and plots -- and nothing in a run grows with its length):

1. *peak*: the command itself; its peak resident set size is the ``ru_maxrss`` that ``wait4``
   reports for that one child (what ``/usr/bin/time -v`` prints as "Maximum resident set size").
2. *breakdown*: the same command run inside this script with its phases wrapped. Before each
   phase the kernel's high-water mark is reset (``/proc/self/clear_refs``, "5"), after it
   ``VmHWM`` is the phase's own peak and ``VmRSS`` what it left behind. Phases: imports
   (Python, numpy, fastnet, the backend), loading, training (fit, with its per-epoch
   evaluations), test evaluation, the rest (model, metrics, plots).

The ratio of evaluation to training time per epoch of the same run (``eval_seconds`` /
``train_seconds`` of its metrics.json) is printed too. Linux only (``/proc``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6
N_TRAIN, D, K = 45_000, 3072, 10
DEFAULT_TRAIN_ARGS = ["--n-s", "450", "--cycles", "1"]


def _status(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def model_bytes(hidden: list[int], dtype_bytes: int = 4) -> int:
    """Bytes of the parameters of the BN network d -> hidden -> K (W, gamma, beta; b of the last layer)."""
    sizes = [D, *hidden, K]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    vectors = 2 * sum(hidden) + K   # gamma, beta of every hidden layer; the output bias
    return (weights + vectors) * dtype_bytes


def budget(hidden: list[int]) -> float:
    return 1.5 * (N_TRAIN * D * 4 + model_bytes(hidden))


def _hidden_of(train_args: list[str]) -> list[int]:
    for i, a in enumerate(train_args):
        if a == "--hidden" and i + 1 < len(train_args):
            return [int(m) for m in train_args[i + 1].split(",")]
        if a.startswith("--hidden="):
            return [int(m) for m in a.split("=", 1)[1].split(",")]
    return [50, 50]


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    return env


# ------------------------------------------------------------------------------- children

def run_peak(train_args: list[str], threads: int) -> tuple[float, dict]:
    """Run ``fastnet-train`` in a child; its peak RSS (bytes) and its metrics.json."""
    with tempfile.TemporaryDirectory(prefix="fastnet-mem-") as tmp:
        cmd = [sys.executable, "-c", "import sys; from fastnet.cli import train_main; sys.exit(train_main())",
               *train_args, "--out", str(Path(tmp) / "run"), "-q"]
        proc = subprocess.Popen(cmd, env=_env(threads))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"measure_memory: {' '.join(cmd)} exited with {proc.returncode}")
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return usage.ru_maxrss * 1024.0, metrics


def run_breakdown(train_args: list[str], threads: int) -> list[dict]:
    """Run this script in ``--trace`` mode in a child; its phases."""
    with tempfile.TemporaryDirectory(prefix="fastnet-mem-") as tmp:
        out = Path(tmp) / "phases.json"
        cmd = [sys.executable, __file__, "--trace", str(out), "--", *train_args, "--out", str(Path(tmp) / "run"), "-q"]
        subprocess.run(cmd, env=_env(threads), check=True)
        return json.loads(out.read_text())


def trace(out: str, train_args: list[str]) -> None:
    """In this process: run fastnet-train with its phases wrapped; write them to ``out``."""
    phases: list[dict] = []

    def phase(name: str, start_rss: float) -> None:
        phases.append({"phase": name, "peak": _status("VmHWM"), "after": _status("VmRSS"), "before": start_rss})

    _reset_peak()
    rss0 = _status("VmRSS")
    import numpy  # noqa: F401

    from fastnet import backends, cli
    from fastnet.data import cifar10 as data
    from fastnet.model import network
    from fastnet.runs import figures
    from fastnet.training import loop as train  # noqa: F401

    backend = next((train_args[i + 1] for i, a in enumerate(train_args[:-1]) if a == "--backend"), "auto")
    backends.resolve(backend).ops
    phase("imports: Python, numpy, fastnet, backend", rss0)

    def wrap(module, name: str, label: str) -> None:
        inner = getattr(module, name)

        def wrapped(*args, **kwargs):
            start = _status("VmRSS")
            _reset_peak()
            result = None
            try:
                result = inner(*args, **kwargs)
                return result
            finally:
                phase(label, start)
                if isinstance(result, data.Dataset):   # what the loaded data set holds
                    test = result.X_test
                    phases[-1]["arrays"] = {"X_train": result.X_train.nbytes, "X_val": result.X_val.nbytes,
                                            "test": test.pixels.nbytes if isinstance(test, data.NormalisedImages) else test.nbytes}

        setattr(module, name, wrapped)

    wrap(data, "load_cifar10", "loading: read, split, normalise")
    wrap(train, "fit", "training: fit, evaluations, checkpoints")
    wrap(network, "evaluate", "test evaluation")   # runs.folder looks it up at call time; fit holds its own
    wrap(figures, "plot_run", "plots")
    code = cli.train_main(train_args)
    if code:
        raise SystemExit(code)
    Path(out).write_text(json.dumps(phases))


# ---------------------------------------------------------------------------------- report

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS threads of the runs (default 1)")
    p.add_argument("--hidden", help="hidden layer sizes, e.g. 50,30,20,20,10,10,10,10 (default 50,50)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--trace", help=argparse.SUPPRESS)
    p.add_argument("train_args", nargs="*", help="more fastnet-train arguments, after --")
    args = p.parse_args()
    train_args = list(args.train_args)
    if args.trace:
        trace(args.trace, train_args)
        return 0
    if args.hidden:
        train_args = ["--hidden", args.hidden, *train_args]
    if not any(a.startswith("--n-s") or a.startswith("--cycles") for a in train_args):
        train_args = [*DEFAULT_TRAIN_ARGS, *train_args]
    hidden = _hidden_of(train_args)
    limit = budget(hidden)
    load = os.getloadavg()[0]
    peak, metrics = run_peak(train_args, args.threads)
    phases = run_breakdown(train_args, args.threads)
    print(f"fastnet-train {' '.join(train_args)}  (BLAS threads {args.threads}, load average {load:.2f}, "
          f"{time.strftime('%Y-%m-%d')})")
    print(f"  float32 training set {N_TRAIN * D * 4 / MB:.0f} MB + model {model_bytes(hidden) / MB:.2f} MB; "
          f"budget 1.5 x that = {limit / MB:.0f} MB")
    print(f"  peak RSS of the run: {peak / MB:.0f} MB = {peak / limit:.2f} of the budget "
          f"({'within' if peak <= limit else 'OVER'})")
    print(f"  {'phase':44s} {'RSS before':>11s} {'peak in it':>11s} {'RSS after':>11s}")
    for ph in phases:
        print(f"  {ph['phase']:44s} {ph['before'] / MB:>8.0f} MB {ph['peak'] / MB:>8.0f} MB {ph['after'] / MB:>8.0f} MB")
    print("  breakdown:")
    imports, loading, *rest = phases
    arrays = loading.get("arrays", {})
    rows = [("imports: Python, numpy, fastnet, the backend", imports["after"]),
            ("data set held: " + " + ".join(f"{k} {v / MB:.0f}" for k, v in arrays.items()), sum(arrays.values())),
            ("loader temporaries (loading peak - what it left)", loading["peak"] - loading["after"])]
    rows += [(f"{ph['phase'].split(':')[0]}: peak above the RSS before it", ph["peak"] - ph["before"]) for ph in rest]
    for label, size in rows:
        print(f"    {label:56s} {size / MB:6.0f} MB")
    epochs = max(1, round(metrics.get("epochs", 1)))
    ratio = metrics["eval_seconds"] / metrics["train_seconds"] if metrics.get("train_seconds") else float("nan")
    print(f"  evaluation / training per epoch, same run: {metrics['eval_seconds'] / epochs:.3f} s / "
          f"{metrics['train_seconds'] / epochs:.3f} s = {ratio:.3f}  ({epochs} epochs, backend {metrics.get('backend')})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "train_args": train_args, "threads": args.threads, "load_average": load, "peak_rss": peak,
            "budget": limit, "phases": phases, "eval_seconds": metrics["eval_seconds"],
            "train_seconds": metrics["train_seconds"], "epochs": metrics.get("epochs")}, indent=2))
    return 0 if peak <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
