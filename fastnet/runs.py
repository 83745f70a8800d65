"""A run is a folder: configuration, history, metrics, model and figures, written atomically.

Layout::

    RUN_DIR/config.json    the TrainConfig and where the data came from
    RUN_DIR/history.csv    one row per evaluation (epoch ends, and every --eval-every steps)
    RUN_DIR/steps.csv      one row per update step: learning rate and batch loss
    RUN_DIR/metrics.json   final figures: test/val/train accuracy, times, backend, dtype, ...
    RUN_DIR/model.npz      parameters, running BN statistics, input normalisation (no pickles)
    RUN_DIR/*.png          loss, cost and accuracy, train vs validation

Every file is written to ``NAME.tmp`` and renamed into place, so an interrupted run never
leaves a half-written file under a final name. ``metrics.json`` is written last: its presence
marks a finished run.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from .errors import FastnetError

HISTORY_FIELDS = ("epoch", "step", "eta", "train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path, data: dict) -> None:
    _atomic_write(Path(path), json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FastnetError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise FastnetError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FastnetError(f"{path} does not hold a JSON object")
    return data


def write_csv(path, rows: list[dict], fields) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    _atomic_write(Path(path), buf.getvalue())


def read_history(path) -> list[dict]:
    """history.csv back as a list of dicts of floats (empty cells become NaN)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def prepare_run_dir(path, overwrite: bool = False) -> Path:
    """Create the run folder; refuse one that already holds a run unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FastnetError(f"--out {path} is a file, not a folder")
    if (path / "config.json").exists() and not overwrite:
        raise FastnetError(f"{path} already holds a run; choose another --out or pass --overwrite")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FastnetError(f"cannot write to the run folder {path} ({exc.strerror or exc})") from None
    return path


def write_history(run_dir, history) -> None:
    """history.csv and steps.csv from a train.History."""
    run_dir = Path(run_dir)
    write_csv(run_dir / "history.csv", history.evals, HISTORY_FIELDS)
    steps = [{"step": i + 1, "eta": e, "batch_loss": l} for i, (e, l) in enumerate(zip(history.step_eta, history.step_loss))]
    write_csv(run_dir / "steps.csv", steps, ("step", "eta", "batch_loss"))


def environment() -> dict:
    """Versions and threads, recorded with every run (a run is reproducible per backend and
    thread count)."""
    import platform

    import numpy

    from . import __version__

    env = {"fastnet": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "cpus": os.cpu_count()}
    try:
        from threadpoolctl import threadpool_info

        env["blas_threads"] = [{"api": p.get("internal_api"), "num_threads": p.get("num_threads")} for p in threadpool_info()]
    except ImportError:
        pass
    return env


def run_to_folder(cfg, out_dir, *, data=None, data_dir=None, download=False, overwrite=False, progress=True, plots=True) -> dict:
    """Train the network ``cfg`` describes and write the whole run folder; returns the metrics.

    ``data`` (a loaded Dataset) is used as is when given, so that sweeps load it once.
    On divergence or interruption the folder keeps config, history and ``status.json`` saying
    what happened; ``metrics.json`` (written last) exists only for a finished run.
    """
    import time

    import numpy as np

    from .backends import resolve
    from .data import load_cifar10
    from .model_io import save_network
    from .network import evaluate
    from .train import History, fit, new_network

    cfg.validate()
    out = prepare_run_dir(out_dir, overwrite=overwrite)
    for stale in ("metrics.json", "status.json"):
        (out / stale).unlink(missing_ok=True)
    backend = resolve(cfg.backend)
    if progress:
        print(f"fastnet: backend {backend.name} ({backend.version}), {cfg.dtype}", file=__import__("sys").stderr)
    if data is None:
        data = load_cifar10(data_dir, split=cfg.split, n_val=cfg.n_val, dtype=np.dtype(cfg.dtype), download=download, progress=progress)
    n_train = data.X_train.shape[0]
    write_json(out / "config.json", {"train": cfg.to_dict(), "n_s_resolved": cfg.resolved_n_s(n_train), "data": {"source": data.source, "split": data.split, "n_train": n_train, "n_val": len(data.y_val), "n_test": len(data.y_test)}, "backend": backend.name})
    net = new_network(cfg, data.X_train.shape[1], len(data.label_names))
    history = History()
    wall = time.perf_counter()
    try:
        fit(net, data, cfg, backend.ops, history, progress=progress)
    except BaseException as exc:
        write_history(out, history)
        reason = "diverged" if isinstance(exc, FastnetError) else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        write_json(out / "status.json", {"status": reason, "message": str(exc), "steps": history.steps})
        raise
    wall = time.perf_counter() - wall
    write_history(out, history)
    save_network(out / "model.npz", net, data.mean, data.std)
    test = evaluate(net, data.X_test, data.y_test, cfg.lam, backend.ops)
    last = history.evals[-1]
    if plots:
        from .report import plot_run

        plot_run(history.evals, out, title=describe(cfg))
    metrics = {
        "test_accuracy": test.accuracy, "test_loss": test.loss, "test_cost": test.cost,
        "val_accuracy": last["val_accuracy"], "val_loss": last["val_loss"], "val_cost": last["val_cost"],
        "train_accuracy": last["train_accuracy"], "train_loss": last["train_loss"], "train_cost": last["train_cost"],
        "train_seconds": history.train_seconds, "eval_seconds": history.eval_seconds, "wall_seconds": wall,
        "epochs": last["epoch"], "steps": history.steps, "n_s": cfg.resolved_n_s(n_train),
        "backend": backend.name, "backend_version": backend.version, "dtype": cfg.dtype,
        "environment": environment(), "status": "finished",
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def describe(cfg) -> str:
    """A short title for a configuration, e.g. '3-layer [50, 50] BN lam=0.005'."""
    return f"{len(cfg.hidden) + 1}-layer {list(cfg.hidden)} {'BN' if cfg.bn else 'no BN'} lam={cfg.lam:g}"


def evaluate_run(run_dir, data_dir=None, backend=None) -> dict:
    """Reload a run's model and measure it on the CIFAR-10 test batch."""
    import numpy as np

    from .backends import resolve
    from .data import find_cifar10, load_batch
    from .model_io import load_network
    from .network import evaluate

    run_dir = Path(run_dir)
    if not (run_dir / "model.npz").exists():
        raise FastnetError(f"{run_dir} is not a finished fastnet run (no model.npz)")
    net, mean, std = load_network(run_dir / "model.npz")
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    if data_dir is None:
        data_dir = config.get("data", {}).get("source")
    X, y = load_batch(find_cifar10(data_dir) / "test_batch")
    if mean is None:
        raise FastnetError(f"{run_dir / 'model.npz'} holds no input normalisation; it was not written by fastnet-train")
    Xn = ((X - mean) / std).astype(net.dtype)
    ops = resolve(backend or config.get("backend")).ops
    m = evaluate(net, Xn, y, 0.0, ops)
    recorded = read_json(run_dir / "metrics.json").get("test_accuracy") if (run_dir / "metrics.json").exists() else None
    return {"test_accuracy": m.accuracy, "n_test": int(len(y)), "recorded_test_accuracy": recorded}
