"""A run is a folder: configuration, history, metrics, model and figures, written atomically.

Layout::

    RUN_DIR/config.json    the TrainConfig and where the data came from
    RUN_DIR/history.csv    one row per evaluation (epoch ends, and every --eval-every steps)
    RUN_DIR/steps.csv      one row per update step: learning rate and batch loss
    RUN_DIR/metrics.json   final figures: test/val/train accuracy, times, backend, dtype, ...
    RUN_DIR/model.npz      parameters, running BN statistics, input normalisation (no pickles)
    RUN_DIR/*.png          loss, cost and accuracy, train vs validation
    RUN_DIR/checkpoint.npz the state to continue from (see fastnet.checkpoint): written when
                           training starts, after every epoch and when SIGINT/SIGTERM stops it
    RUN_DIR/status.json    why an unfinished run stopped: interrupted, diverged or failed
    RUN_DIR/.lock          the pid of the process writing the folder, while it runs

Every file is written to ``NAME.tmp`` and renamed into place, so an interrupted run never
leaves a half-written file under a final name. ``metrics.json`` is written last: its presence
marks a finished run.

A stopped run continues with :func:`resume_run` (``fastnet-train --resume RUN_DIR``) and ends
bitwise as it would have without the stop. Only one process writes a folder at a time: the
second is refused while the first holds ``.lock`` (:class:`RunLock`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, DivergenceError, FastnetError

HISTORY_FIELDS = ("epoch", "step", "eta", "train_loss", "train_cost", "train_accuracy", "val_loss", "val_cost", "val_accuracy")


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path.tmp``, flush it to disk, rename it over ``path``.

    On failure (a full disk) the ``.tmp`` file is removed and ``path`` is left as it was.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deeply
        raise FastnetError(f"{path} is not readable JSON ({str(exc)[:200]})") from None
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
    path = make_run_dir(path)
    check_fresh(path, overwrite)
    return path


def make_run_dir(path) -> Path:
    """Create the folder (and its parents) and check that files can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FastnetError(f"--out {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise FastnetError(f"cannot write to the run folder {path} ({exc.strerror or exc}); choose another --out") from None
    return path


def check_fresh(path: Path, overwrite: bool) -> None:
    """Refuse a folder that already holds a run (config.json) unless ``overwrite``."""
    if (path / "config.json").exists() and not overwrite:
        hint = "; it can be continued with fastnet-train --resume " + shlex.quote(str(path)) if not (path / "metrics.json").exists() and (path / CHECKPOINT).exists() else ""
        raise FastnetError(f"{path} already holds a run; choose another --out or pass --overwrite{hint}")


# ------------------------------------------------------------------------------ the lock

LOCK = ".lock"
CHECKPOINT = "checkpoint.npz"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    except (OSError, OverflowError):
        return False
    try:  # an exited child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@contextmanager
def _folder_mutex(folder: Path):
    """flock on the folder itself, so that checking and taking over a stale lock is one step."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


class RunLock:
    """``RUN_DIR/.lock``: created with O_CREAT | O_EXCL and holding ``"<pid> <host>"``.

    A second process that finds the lock of a live process is refused with a FastnetError;
    the lock of a process that no longer exists (killed, machine restarted) is taken over with
    a notice on stderr. Checking and taking over happen under an flock on the folder, so two
    processes cannot both take over the same stale lock. A lock from another host cannot be
    checked and is treated as live (the message says how to remove it).
    """

    def __init__(self, folder, notice=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.held = False
        self.notice = notice or (lambda msg: print(msg, file=sys.stderr))

    def _holder(self) -> tuple[int | None, str]:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace").split()
        except FileNotFoundError:
            return None, ""
        except OSError:
            return None, "?"
        try:
            return int(text[0]), text[1] if len(text) > 1 else socket.gethostname()
        except (IndexError, ValueError):
            return None, "?"  # empty or garbage: the writer died before finishing it

    def acquire(self) -> "RunLock":
        me = f"{os.getpid()} {socket.gethostname()}\n".encode()
        try:
            with _folder_mutex(self.folder):
                for _ in range(3):
                    try:
                        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                    except FileExistsError:
                        pid, host = self._holder()
                        if pid is not None and host != socket.gethostname():
                            raise FastnetError(f"{self.folder} is in use by fastnet process {pid} on {host}; if no run is active there, delete {self.path}") from None
                        if pid is not None and _pid_alive(pid):
                            raise FastnetError(f"{self.folder} is in use by another fastnet process (pid {pid}); wait for it to finish or choose another --out") from None
                        if host:
                            what = f"process {pid} no longer runs" if pid is not None else "it is unreadable"
                            self.notice(f"fastnet: taking over the stale lock {self.path} ({what})")
                        self.path.unlink(missing_ok=True)
                        continue
                    try:
                        os.write(fd, me)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    self.held = True
                    return self
        except OSError as exc:
            raise FastnetError(f"cannot lock the run folder {self.folder} ({exc.strerror or exc})") from None
        raise FastnetError(f"cannot lock the run folder {self.folder}: {self.path} keeps reappearing")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self._holder()[0] == os.getpid():
                self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------- signals


@contextmanager
def stop_on_signals():
    """A StopRequest that SIGINT and SIGTERM set while training (restored afterwards).

    During :func:`fastnet.train.fit`'s loop the first signal only sets the request, so the
    step in flight finishes and is checkpointed; outside it (loading data, writing the
    outputs), or at a second signal, :class:`fastnet.train.Interrupted` is raised at once.
    Signals ignored by the parent (``nohup``) stay ignored; outside the main thread nothing is
    installed (Python allows handlers only there) and Ctrl-C behaves as usual.
    """
    from .train import Interrupted, StopRequest

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.deferring and stop.signum is None:
            stop.signum = signum
            return
        raise Interrupted(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def write_history(run_dir, history) -> None:
    """history.csv and steps.csv from a train.History (columns beyond HISTORY_FIELDS, such as
    PreciseBN runs' ``val_accuracy_ema``, are appended when the rows have them)."""
    run_dir = Path(run_dir)
    extra = [k for k in dict.fromkeys(k for row in history.evals for k in row) if k not in HISTORY_FIELDS]
    write_csv(run_dir / "history.csv", history.evals, (*HISTORY_FIELDS, *extra))
    steps = [{"step": i + 1, "eta": e, "batch_loss": l} for i, (e, l) in enumerate(zip(history.step_eta, history.step_loss))]
    write_csv(run_dir / "steps.csv", steps, ("step", "eta", "batch_loss"))


def environment() -> dict:
    """Versions and threads, recorded with every run (a run is reproducible per backend and
    thread count)."""
    import platform

    import numpy

    from . import __version__

    env = {"fastnet": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "cpus": os.cpu_count()}
    from threadpoolctl import threadpool_info

    env["blas_threads"] = [{"api": p.get("internal_api"), "num_threads": p.get("num_threads")} for p in threadpool_info()]
    return env


def run_to_folder(cfg, out_dir, *, data=None, data_dir=None, download=False, overwrite=False, progress=True, plots=True) -> dict:
    """Train the network ``cfg`` describes and write the whole run folder; returns the metrics.

    ``data`` (a loaded Dataset) is used as is when given, so that sweeps load it once.
    The folder is locked while the run writes it (:class:`RunLock`). A checkpoint is written
    when training starts and after every epoch; SIGINT or SIGTERM stops the run after the
    step in flight, checkpoints it and raises :class:`fastnet.train.Interrupted` (exit status
    130 / 143), whose message says how to resume. On divergence, interruption or failure the
    folder keeps config, history, the last good checkpoint and ``status.json`` saying what
    happened; ``metrics.json`` (written last) exists only for a finished run.
    """
    import numpy as np

    from .backends import resolve
    from .data import load_cifar10
    from .train import History, new_network

    cfg.validate()
    out = make_run_dir(out_dir)
    with RunLock(out), stop_on_signals() as stop:
        begin_folder(out, overwrite)
        backend = resolve(cfg.backend)
        if progress:
            print(f"fastnet: backend {backend.name} ({backend.version}), {cfg.dtype}", file=sys.stderr)
        if data is None:
            data = load_cifar10(data_dir, split=cfg.split, n_val=cfg.n_val, dtype=np.dtype(cfg.dtype), download=download, progress=progress)
        write_config(out, cfg, data, backend)
        net = new_network(cfg, data.X_train.shape[1], len(data.label_names))
        return _train(out, cfg, data, backend, net, History(), None, stop, progress, plots)


def begin_folder(out: Path, overwrite: bool) -> None:
    """In a locked folder: refuse an existing run unless ``overwrite``, then remove what marks
    a run as finished or stopped (a new run starts)."""
    check_fresh(out, overwrite)
    for stale in ("metrics.json", "status.json", CHECKPOINT):
        (out / stale).unlink(missing_ok=True)


def write_config(out: Path, cfg, data, backend) -> None:
    """``config.json``: the TrainConfig, where the data came from and the backend."""
    n_train = data.X_train.shape[0]
    _guard_writes(out, lambda: write_json(out / "config.json", {"train": cfg.to_dict(), "n_s_resolved": cfg.resolved_n_s(n_train), "data": {"source": data.source, "split": data.split, "n_train": n_train, "n_val": len(data.y_val), "n_test": len(data.y_test)}, "backend": backend.name}), None)


def resume_run(run_dir, *, data_dir=None, download=False, progress=True, plots=True) -> dict:
    """Continue a stopped run from its ``checkpoint.npz``; returns the metrics when it finishes.

    Takes the configuration from ``config.json`` and the data from where it was loaded (or
    ``data_dir``), checks that checkpoint, configuration and data belong together, and trains
    the remaining steps on the backend the run started with. The finished folder equals that
    of an uninterrupted run: the same parameters bit for bit (same backend and thread count),
    the same history rows (timings aside). Refuses a folder that is not a run, a finished run,
    a diverged one (it would diverge again), and one another process is writing.
    """
    import numpy as np

    from .backends import resolve
    from .checkpoint import CheckpointError, data_fingerprint, load_checkpoint
    from .data import load_cifar10
    from .train import TrainConfig

    out = Path(run_dir)
    if out.exists() and not out.is_dir():
        raise FastnetError(f"--resume {out}: this is a file, not a run folder")
    if not out.is_dir():
        raise FastnetError(f"--resume {out}: there is no such folder")
    if not (out / "config.json").is_file():
        raise FastnetError(f"--resume {out}: this is not a fastnet run folder (it has no config.json)")
    with RunLock(out), stop_on_signals() as stop:
        if (out / "metrics.json").exists():
            raise FastnetError(f"{out} holds a finished run (it has metrics.json); there is nothing to resume")
        try:
            status = read_json(out / "status.json") if (out / "status.json").exists() else {}
        except FastnetError:
            status = {}  # only a note of why the run stopped: damaged, it must not block the resume
        if status.get("status") == "diverged":
            raise FastnetError(f"{out} diverged ({status.get('message', 'see status.json')}); resuming would diverge again the same way, so start a new run with a lower --eta-max")
        config = read_json(out / "config.json")
        try:
            if not isinstance(config.get("train"), dict):
                raise ConfigError("it has no \"train\" settings")
            cfg = TrainConfig.from_dict(config["train"]).validate()
            source = config.get("data", {}).get("source")
            backend_name = config.get("backend") or cfg.backend
            if not isinstance(source, (str, type(None))) or not isinstance(backend_name, str):
                raise ConfigError("its data source or backend is not a string")
        except (KeyError, TypeError, AttributeError, FastnetError) as exc:
            raise FastnetError(f"{out / 'config.json'} is not a fastnet run configuration ({exc})") from None
        if not (out / CHECKPOINT).exists():
            raise FastnetError(f"{out} has no {CHECKPOINT}: the run stopped before training started; start it again with --out {shlex.quote(str(out))} --overwrite")
        ckpt = load_checkpoint(out / CHECKPOINT)
        if ckpt.config != cfg.to_dict():
            raise CheckpointError(f"{out / CHECKPOINT} was written with another configuration than {out / 'config.json'}; resume is impossible, start the run again")
        backend = resolve(backend_name)
        data = load_cifar10(data_dir if data_dir is not None else source, split=cfg.split, n_val=cfg.n_val, dtype=np.dtype(cfg.dtype), download=download, progress=progress)
        if ckpt.data and ckpt.data != data_fingerprint(data):
            raise FastnetError(f"the data in {data.source} is not the data {out} was trained on (different images or split); pass --data-dir with the original data")
        if (ckpt.net.sizes != [data.X_train.shape[1], *cfg.hidden, len(data.label_names)] or ckpt.net.dtype != np.dtype(cfg.dtype)
                or ckpt.net.bn != cfg.bn or ckpt.net.bn_placement != cfg.bn_placement or ckpt.net.skip != cfg.skip):
            raise CheckpointError(f"{out / CHECKPOINT} holds a network of sizes {ckpt.net.sizes} ({ckpt.net.dtype}), not the one config.json describes; resume is impossible")
        if progress:
            print(f"fastnet: resuming {out} at step {ckpt.position.t} on backend {backend.name} ({backend.version}), {cfg.dtype}", file=sys.stderr)
        from .train import new_optimizer

        optimizer = new_optimizer(cfg, ckpt.net)
        try:
            if ckpt.optimizer != optimizer.name:
                raise ValueError(f"it was written by the {ckpt.optimizer!r} optimiser, not {optimizer.name!r}")
            optimizer.load_state(ckpt.optimizer_state)
        except ValueError as exc:
            raise CheckpointError(f"{out / CHECKPOINT} does not hold this run's optimiser state ({exc}); resume is impossible, start the run again") from None
        (out / "status.json").unlink(missing_ok=True)
        return _train(out, cfg, data, backend, ckpt.net, ckpt.history, ckpt.position, stop, progress, plots, optimizer)


def _write_error(out: Path, exc: OSError, last_checkpoint: int | None) -> FastnetError:
    """One sentence for an OSError while writing the run folder (a full disk, a removed folder)."""
    if last_checkpoint is not None:
        what = f"the last checkpoint (step {last_checkpoint}) is kept: free some space and resume with: fastnet-train --resume {shlex.quote(str(out))}"
    else:
        what = "free some space or choose another --out"
    return FastnetError(f"cannot write to the run folder {out} ({exc.strerror or exc}); {what}")


def _guard_writes(out: Path, work, last_checkpoint):
    """Run ``work``; an OSError becomes the FastnetError of :func:`_write_error`."""
    try:
        return work()
    except OSError as exc:
        raise _write_error(out, exc, last_checkpoint) from None


def _train(out: Path, cfg, data, backend, net, history, start, stop, progress: bool, plots: bool, optimizer=None) -> dict:
    """fit with checkpoints into ``out``, then the outputs; status.json if it stops early.

    ``optimizer``: the one loaded from the checkpoint when resuming (fresh otherwise); its
    state (Adam's moments) goes into every checkpoint."""
    import time

    from .checkpoint import data_fingerprint, save_checkpoint
    from .train import finish_bn_stats, fit, new_optimizer

    fingerprint = data_fingerprint(data)
    config = cfg.to_dict()
    saved = {"step": start.t if start is not None else None}
    optimizer = optimizer if optimizer is not None else new_optimizer(cfg, net)

    def checkpoint(position) -> None:
        save_checkpoint(out / CHECKPOINT, net, history, position, config, data=fingerprint, optimizer=optimizer.name, optimizer_state=optimizer.state())
        saved["step"] = position.t

    wall = time.perf_counter()
    try:
        try:
            fit(net, data, cfg, backend.ops, history, progress=progress, start=start, checkpoint=checkpoint, stop=stop, optimizer=optimizer)
            bonus_metrics = finish_bn_stats(net, data, cfg, backend.ops)  # PreciseBN: EMA figures, then the final statistics
            wall = time.perf_counter() - wall
            test, last = write_outputs(out, cfg, data, backend, net, history, plots)
        except OSError as exc:
            raise _write_error(out, exc, saved["step"]) from None
    except BaseException as exc:
        stopped = record_stop(out, exc, history, saved["step"])
        if stopped is not sys.exc_info()[1]:
            raise stopped from None
        raise
    metrics = run_metrics(cfg, data, backend, history, test, last, wall, start.t if start is not None else None, bonus_metrics)
    _guard_writes(out, lambda: write_json(out / "metrics.json", metrics), saved["step"])
    return metrics


def write_outputs(out: Path, cfg, data, backend, net, history, plots: bool):
    """After training: history.csv, steps.csv, model.npz, the test evaluation and the figures.
    Returns (test Metrics, the last history row). OSError passes through."""
    from .model_io import save_network
    from .network import evaluate

    write_history(out, history)
    save_network(out / "model.npz", net, data.mean, data.std)
    test = evaluate(net, data.X_test, data.y_test, cfg.lam, backend.ops)
    if plots:
        from .report import plot_run

        plot_run(history.evals, out, title=describe(cfg))
    return test, history.evals[-1]


def record_stop(out: Path, exc: BaseException, history, saved_step: int | None) -> BaseException:
    """A run stopped by ``exc`` (divergence, a signal, a failure): write what it measured and
    ``status.json`` saying why, and return the exception to raise, its message saying how to
    go on (resume from the last checkpoint, step ``saved_step``)."""
    from .train import Interrupted

    resume = f"fastnet-train --resume {shlex.quote(str(out))}"
    if isinstance(exc, KeyboardInterrupt):
        if not isinstance(exc, Interrupted):
            exc = Interrupted(signal.SIGINT)
        if exc.step is not None:
            exc.message = f"fastnet: interrupted at step {exc.step}; resume with: {resume}"
        elif saved_step is not None:
            exc.message = f"fastnet: interrupted; resume with: {resume} (continues from the checkpoint at step {saved_step})"
    elif isinstance(exc, DivergenceError) and saved_step is not None:
        exc.args = (f"{exc}; the history and the last good checkpoint (step {saved_step}) are kept in {out}",)
    reason = "diverged" if isinstance(exc, DivergenceError) else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    try:
        write_history(out, history)
        write_json(out / "status.json", {"status": reason, "message": str(exc), "steps": history.steps, "checkpoint_step": saved_step})
    except OSError:
        pass  # the disk may be full: the checkpoint is what matters, and it is intact
    return exc


def run_metrics(cfg, data, backend, history, test, last: dict, wall: float, resumed_from: int | None, extra: dict | None = None) -> dict:
    """The contents of ``metrics.json`` of a finished run."""
    return {
        "test_accuracy": test.accuracy, "test_loss": test.loss, "test_cost": test.cost,
        "val_accuracy": last["val_accuracy"], "val_loss": last["val_loss"], "val_cost": last["val_cost"],
        "train_accuracy": last["train_accuracy"], "train_loss": last["train_loss"], "train_cost": last["train_cost"],
        "train_seconds": history.train_seconds, "eval_seconds": history.eval_seconds, "wall_seconds": wall,
        "epochs": last["epoch"], "steps": history.steps, "n_s": cfg.resolved_n_s(data.X_train.shape[0]),
        "backend": backend.name, "backend_version": backend.version, "dtype": cfg.dtype,
        "environment": environment(), "status": "finished", "resumed_from_step": resumed_from,
        **(extra or {}),
    }


def describe(cfg) -> str:
    """A short title for a configuration, e.g. '3-layer [50, 50] BN lam=0.005' (bonus settings
    appended where used, e.g. '... BN-after skip adam cosine aug preciseBN')."""
    tags = [tag for tag, on in (("BN-after", cfg.bn_placement == "after"), ("skip", cfg.skip), (cfg.optimizer, cfg.optimizer != "sgd"),
                                (cfg.schedule, cfg.schedule != "cyclic"), ("aug", cfg.augment), ("preciseBN", cfg.bn_stats == "precise")) if on]
    return f"{len(cfg.hidden) + 1}-layer {list(cfg.hidden)} {'BN' if cfg.bn else 'no BN'} lam={cfg.lam:g}" + "".join(" " + t for t in tags)


def evaluate_run(run_dir, data_dir=None, backend=None) -> dict:
    """Reload a run's model and measure it on the CIFAR-10 test batch."""
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
        source = config.get("data", {}).get("source") if isinstance(config.get("data"), dict) else None
        data_dir = source if isinstance(source, str) else None
    X, y = load_batch(find_cifar10(data_dir) / "test_batch")
    if mean is None:
        raise FastnetError(f"{run_dir / 'model.npz'} holds no input normalisation; it was not written by fastnet-train")
    if net.sizes[0] != X.shape[1] or net.sizes[-1] <= int(y.max()):
        raise FastnetError(f"{run_dir / 'model.npz'} is a network for {net.sizes[0]} inputs and {net.sizes[-1]} classes, not for CIFAR-10's {X.shape[1]} and 10; it belongs to another task")
    Xn = ((X - mean) / std).astype(net.dtype)
    name = backend or config.get("backend")
    try:
        ops = resolve(name if isinstance(name, str) else None).ops
    except ValueError as exc:
        raise FastnetError(f"{run_dir / 'config.json'}: {exc}") from None
    m = evaluate(net, Xn, y, 0.0, ops)
    recorded = read_json(run_dir / "metrics.json").get("test_accuracy") if (run_dir / "metrics.json").exists() else None
    recorded = recorded if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) else None
    return {"test_accuracy": m.accuracy, "n_test": int(len(y)), "recorded_test_accuracy": recorded}
