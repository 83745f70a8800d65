"""The search behind ``fastnet experiment best-mlp``: train candidate settings one at a time and
log what each reached, so the table in the README and the report can be traced to runs.

Each candidate is a ``fastnet-train`` run (through :func:`fastnet.train`, in its own folder
under ``--out``) of the settings given as JSON; one line per finished run goes to
``OUT/search.jsonl``: the settings, epochs, training and wall seconds, validation accuracy (what
the choice is made on) and test accuracy (measured once, at the end of the run, never used to
choose). Candidates already logged are skipped, so the script can be stopped and started again.

    python scripts/search_best_mlp.py --out search --threads 2 \\
        '{"name": "w1024-aug2", "hidden": [1024, 512, 256], "lam": 0.001, "augment": true, "augment_shift": 2, "n_s": 4500, "cycles": 1}'

Wall time is only meaningful on an otherwise idle machine: the script prints the load average
before each run, and the log keeps it.

``--tta-of RUN_DIR`` logs instead a finished run re-measured with test-time augmentation
(``--tta``, default flip-shift) on its validation and test images, as "NAME+tta": what the
views add to a model, at no training cost.

The validation figure logged is the one the choice is made on: a run with test-time
augmentation has it in ``val_accuracy_tta``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from fastnet.util.cpu import cpu_id as cpu_model


def main() -> None:
    import fastnet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="*", help="JSON objects: a 'name' and fastnet-train settings")
    ap.add_argument("--tta-of", metavar="RUN_DIR", help="log this finished run re-measured with --tta views instead of training")
    ap.add_argument("--tta", default="flip-shift", choices=["flip", "flip-shift"], help="--tta-of: the views (default flip-shift)")
    ap.add_argument("--out", default="search", help="folder of the runs and search.jsonl")
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads per run (default: the idle cores)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "search.jsonl"
    done = {json.loads(line)["name"] for line in log.read_text().splitlines() if line.strip()} if log.exists() else set()
    if args.tta_of:
        log_tta(Path(args.tta_of), args.tta, log)
    for text in args.candidates:
        settings = json.loads(text)
        name = settings.pop("name")
        if name in done:
            print(f"{name}: logged already, skipped", flush=True)
            continue
        load = os.getloadavg()[0]
        print(f"{name}: {settings} (load {load:.2f})", flush=True)
        t0 = time.perf_counter()
        run = fastnet.train(out=out / name, overwrite=True, threads=args.threads, progress=False, plots=False, **settings)
        wall = time.perf_counter() - t0
        m = json.loads((run.path / "metrics.json").read_text())
        n_train = 45_000
        epochs = m.get("steps", 0) * settings.get("batch", 100) / n_train
        row = {"name": name, "settings": settings, "epochs": round(epochs, 2), "train_seconds": round(m.get("train_seconds", 0.0), 1),
               "wall_seconds": round(wall, 1), "val_accuracy": m.get("val_accuracy_tta", m.get("val_accuracy")), "test_accuracy": m.get("test_accuracy"),
               "load_before": round(load, 2), "cpu": cpu_model(), "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M")}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: val {row['val_accuracy']:.4f} test {row['test_accuracy']:.4f}, {epochs:.1f} epochs, "
              f"{row['train_seconds']:.0f} s training, {wall:.0f} s wall", flush=True)


def log_tta(run_dir: Path, tta: str, log: Path) -> None:
    """Log the finished run ``run_dir`` re-measured with the views of ``tta``."""
    import numpy as np

    import fastnet
    from fastnet.data.augment import tta_views
    from fastnet.model.network import evaluate

    run = fastnet.load_run(run_dir)
    cfg = run.config
    data = fastnet.load_cifar10(split=cfg.split, n_val=cfg.n_val, progress=False)
    views = tta_views(tta)
    acc = {split: evaluate(run.network, run.inputs(X), np.asarray(y), 0.0, run._ops, views=views).accuracy
           for split, X, y in (("val", data.X_val, data.y_val), ("test", data.X_test, data.y_test))}
    m = run.metrics
    row = {"name": f"{run_dir.name}+tta", "settings": {**cfg.to_dict(), "tta": tta}, "epochs": m.get("epochs"),
           "train_seconds": round(m.get("train_seconds", 0.0), 1), "wall_seconds": round(m.get("wall_seconds", 0.0), 1),
           "val_accuracy": acc["val"], "test_accuracy": acc["test"], "without_tta": {"val": m.get("val_accuracy"), "test": m.get("test_accuracy")},
           "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M")}
    with log.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{row['name']}: val {acc['val']:.4f} test {acc['test']:.4f} (without: val {m.get('val_accuracy'):.4f} test {m.get('test_accuracy'):.4f})", flush=True)


if __name__ == "__main__":
    main()
