"""Checkpoints, resume and divergence: a stopped run continues to the bit-identical result.

Two levels:

- in process, deterministic: ``fit`` is stopped at chosen steps (first and last step of an
  epoch, right after an --eval-every evaluation, the very last step, before the first) and
  resumed from the checkpoint file; and every checkpoint a run writes (start, each epoch end)
  is resumed, as after a SIGKILL;
- real processes: ``python -m fastnet.cli train`` is sent SIGINT, SIGTERM or SIGKILL at seeded
  random moments, resumed with ``--resume``, and its model.npz, history.csv and steps.csv are
  compared with those of an uninterrupted run.

Bitwise equality holds for one backend and thread count, so every process here runs the NumPy
backend with one BLAS thread.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import StopAt

import fastnet.training.stepper as train_mod
from fastnet.backends import resolve
from fastnet.cli import train_main
from fastnet.data.cifar10 import load_cifar10
from fastnet.errors import DivergenceError
from fastnet.training.checkpoint import load_checkpoint, save_checkpoint
from fastnet.training.config import TrainConfig, new_network
from fastnet.training.loop import fit
from fastnet.training.state import History, Interrupted

OPS = resolve("numpy").ops


# ------------------------------------------------------------------ in process, exact steps


@pytest.fixture(scope="module")
def fake(fake_cifar_dir):
    return load_cifar10(fake_cifar_dir, n_val=300, progress=False)


def small_cfg(**kw) -> TrainConfig:
    # 1200 training rows / batch 50 = 24 steps per epoch; 90 steps = 3 epochs and 18 steps
    base = dict(hidden=(20, 20), n_s=45, cycles=1, batch=50, eta_max=0.05, n_val=300, eval_every=7, backend="numpy")
    return TrainConfig(**(base | kw)).validate()


def state(net, history):
    """Everything a run ends with that must not depend on interruptions (timings aside)."""
    return {**{k: a.copy() for k, a in net.params().items()}, **{k: a.copy() for k, a in net.running_stats().items()}}, \
        (list(history.evals), list(history.step_eta), list(history.step_loss))


def assert_same(a, b):
    arrays_a, hist_a = a
    arrays_b, hist_b = b
    assert arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype
        assert arrays_a[k].tobytes() == arrays_b[k].tobytes(), f"{k} differs"
    assert hist_a == hist_b


@pytest.fixture(scope="module")
def reference(fake):
    cfg = small_cfg()
    net = new_network(cfg, 3072, 10)
    history = fit(net, fake, cfg, OPS, progress=False)
    return state(net, history)


def writer(path: Path, net, history, cfg, keep: list | None = None):
    def checkpoint(position):
        save_checkpoint(path, net, history, position, cfg.to_dict())
        if keep is not None:
            keep.append(path.read_bytes())
    return checkpoint


def resume_from(path: Path, fake, cfg, stop=None, keep=None):
    ck = load_checkpoint(path)
    fit(ck.net, fake, cfg, OPS, ck.history, progress=False, start=ck.position,
        checkpoint=writer(path, ck.net, ck.history, cfg, keep), stop=stop)
    return ck


@pytest.mark.parametrize("k", [0, 1, 7, 23, 24, 25, 71, 89, 90])
def test_stopped_at_step_k_and_resumed_equals_uninterrupted(k, fake, reference, tmp_path):
    cfg = small_cfg()
    net, history = new_network(cfg, 3072, 10), History()
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(Interrupted) as exc:
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=writer(path, net, history, cfg), stop=StopAt(history, k))
    assert exc.value.step == k and exc.value.exit_code == 130
    ck = resume_from(path, fake, cfg)
    assert_same(state(ck.net, ck.history), reference)


def test_stopped_twice_and_resumed_twice_equals_uninterrupted(fake, reference, tmp_path):
    cfg = small_cfg()
    net, history = new_network(cfg, 3072, 10), History()
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(Interrupted):
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=writer(path, net, history, cfg), stop=StopAt(history, 30))
    ck = load_checkpoint(path)
    with pytest.raises(Interrupted):
        fit(ck.net, fake, cfg, OPS, ck.history, progress=False, start=ck.position,
            checkpoint=writer(path, ck.net, ck.history, cfg), stop=StopAt(ck.history, 61))
    assert load_checkpoint(path).position.t == 61
    ck = resume_from(path, fake, cfg)
    assert_same(state(ck.net, ck.history), reference)


def test_every_checkpoint_a_run_writes_resumes_to_the_same_end(fake, reference, tmp_path):
    """What a SIGKILL leaves: the checkpoint of the start or of the last finished epoch."""
    cfg = small_cfg()
    net, history, kept = new_network(cfg, 3072, 10), History(), []
    path = tmp_path / "checkpoint.npz"
    fit(net, fake, cfg, OPS, history, progress=False, checkpoint=writer(path, net, history, cfg, kept))
    assert_same(state(net, history), reference)  # checkpointing changes nothing
    steps = []
    for blob in kept:
        path.write_bytes(blob)
        steps.append(load_checkpoint(path).position.t)
        ck = resume_from(path, fake, cfg)
        assert_same(state(ck.net, ck.history), reference)
    assert steps == [0, 24, 48, 72, 90]


def test_checkpoint_round_trip_keeps_everything(fake_cifar_dir, tmp_path):
    fake = load_cifar10(fake_cifar_dir, n_val=300, dtype=np.float64, progress=False)
    cfg = small_cfg(dtype="float64", bn=True)
    net, history = new_network(cfg, 3072, 10), History()
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(Interrupted):
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=writer(path, net, history, cfg), stop=StopAt(history, 30))
    ck = load_checkpoint(path)
    assert ck.config == cfg.to_dict() and ck.optimizer == "sgd" and ck.optimizer_state == {}
    assert (ck.position.t, ck.position.epoch, ck.position.j) == (30, 1, 6)
    assert ck.position.rng_state["bit_generator"] == "PCG64"
    assert ck.history.evals == history.evals and ck.history.step_loss == history.step_loss
    for name, a in {**net.params(), **net.running_stats()}.items():
        b = {**ck.net.params(), **ck.net.running_stats()}[name]
        assert b.dtype == np.float64 and b.tobytes() == a.tobytes()
    with np.load(path, allow_pickle=False) as z:  # no pickles anywhere
        assert all(z[k].dtype != object for k in z.files)
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------------------- divergence


def test_divergence_names_step_rate_and_layer_and_keeps_the_last_good_checkpoint(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "div"
    code = train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), "--n-val", "300", "--hidden", "16", "--batch", "50",
                       "--n-s", "60", "--cycles", "1", "--no-bn", "--eta-min", "1e-3", "--eta-max", "1e6", "--lam", "0", "-q",
                       "--backend", "numpy", "--no-plots"])
    assert code == 2
    err = capsys.readouterr().err
    m = re.search(r"diverged at step (\d+) \(learning rate ([0-9.e+-]+)\): (W\d|b\d|the output of layer \d \(W\d\)) is not finite", err)
    assert m, err
    assert err.count("\n") == 1 and "Traceback" not in err
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "diverged" and not (out / "metrics.json").exists()
    ck = load_checkpoint(out / "checkpoint.npz")  # loads: its parameters are all finite
    assert ck.position.t == status["checkpoint_step"] and ck.position.t < int(m.group(1))
    assert ck.position.t % 24 == 0  # an epoch end (or the start)
    assert (out / "history.csv").exists() and len((out / "steps.csv").read_text().splitlines()) == int(m.group(1)) + 1
    assert not (out / ".lock").exists()
    # resuming would repeat the divergence: refused in one sentence
    assert train_main(["--resume", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "lower --eta-max" in err and err.count("\n") == 1


@pytest.mark.parametrize("name, at_step, found_at", [
    ("W2", 10, 11),           # mid-epoch: the next step's loss is NaN, and W2 is named
    ("W2", 24, 24),           # the last step of an epoch: the end-of-epoch check finds it
    ("mu_av1", 24, 24),       # a running statistic: the loss stays finite, the epoch check finds it
    ("gamma2", 47, 48),
])
def test_non_finite_parameter_is_named(name, at_step, found_at, fake, monkeypatch, tmp_path):
    cfg = small_cfg(hidden=(20, 20, 20))
    net, history = new_network(cfg, 3072, 10), History()
    real_step = train_mod.train_step

    def poisoned(net_, X, y, lam, eta, ops):
        loss = real_step(net_, X, y, lam, eta, ops)
        if len(history.step_loss) + 1 == at_step:
            {**net_.params(), **net_.running_stats()}[name][0] = np.inf
        return loss

    monkeypatch.setattr(train_mod, "train_step", poisoned)
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(DivergenceError, match=rf"at step {found_at} \(learning rate [0-9.e+-]+\): {name} is not finite"):
        fit(net, fake, cfg, OPS, history, progress=False, checkpoint=writer(path, net, history, cfg))
    ck = load_checkpoint(path)  # the last checkpoint holds finite values only
    assert ck.position.t == (found_at - 1) // 24 * 24


# -------------------------------------------------------------------- real processes, signals

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
# 1200 rows / batch 20 = 60 steps per epoch, 4000 steps: about 3-5 s of training
FLAGS = ["--n-val", "300", "--backend", "numpy", "--hidden", "50,50", "--batch", "20", "--n-s", "2000", "--cycles", "1",
         "--eval-every", "500", "--no-plots", "-q"]
TRAIN = [sys.executable, "-m", "fastnet.cli", "train"]
INTERRUPTED = re.compile(r"^fastnet: interrupted at step (\d+); resume with: fastnet-train --resume (\S+)$")
SEED = 20240611
KILL_POINTS = [(signal.SIGINT, 0), (signal.SIGTERM, 1), (signal.SIGINT, 2), (signal.SIGKILL, 3)]


def _default_signals():  # a test runner started in the background may ignore SIGINT: undo it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args) -> subprocess.Popen:
    return subprocess.Popen(TRAIN + [str(a) for a in args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals)


def wait_for_training(proc, checkpoint: Path, after_mtime: int | None = None, timeout: float = 120.0) -> None:
    """Until ``checkpoint`` exists (training started), or changed since ``after_mtime``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoint.exists() and (after_mtime is None or checkpoint.stat().st_mtime_ns != after_mtime):
            return
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError("training did not start")


def same_run(a: Path, b: Path) -> None:
    with np.load(a / "model.npz") as za, np.load(b / "model.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            assert za[k].dtype == zb[k].dtype and za[k].tobytes() == zb[k].tobytes(), f"model.npz {k} differs"
    for name in ("history.csv", "steps.csv"):
        lines_a, lines_b = (a / name).read_text().splitlines(), (b / name).read_text().splitlines()
        first = next((i for i, (x, y) in enumerate(zip(lines_a, lines_b)) if x != y), min(len(lines_a), len(lines_b)))
        # the first differing line, not the whole file (pytest's diff of two long files takes minutes)
        assert lines_a == lines_b, f"{name} differs from line {first + 1}: {lines_a[first:first + 1]} vs {lines_b[first:first + 1]}"


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    done = subprocess.run(TRAIN + ["--data-dir", str(fake_cifar_dir), "--out", str(out)] + FLAGS, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, json.loads((out / "metrics.json").read_text())["train_seconds"]


def delays(train_seconds: float) -> list[float]:
    """Seeded kill moments, as fractions of an uninterrupted run's training time."""
    return list(np.random.default_rng(SEED).uniform(0.05, 0.75, size=len(KILL_POINTS)) * train_seconds)


def interrupt(proc, sig, delay: float) -> tuple[int, str]:
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def check_interrupted(out: Path, sig, code: int, err: str) -> int:
    """The state a SIGINT/SIGTERM leaves: one line, status.json, a checkpoint of that step."""
    assert code == 128 + sig, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    m = INTERRUPTED.match(lines[0])
    assert m and m.group(2) == str(out), err
    step = int(m.group(1))
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and status["checkpoint_step"] == step == status["steps"]
    assert load_checkpoint(out / "checkpoint.npz").position.t == step
    assert not (out / "metrics.json").exists() and not (out / ".lock").exists()
    assert not list(out.glob("*.tmp"))
    return step


def resume(out: Path) -> str:
    done = subprocess.run(TRAIN + ["--resume", str(out), "-q", "--no-plots"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig, point", KILL_POINTS, ids=[f"{signal.Signals(s).name}-{p}" for s, p in KILL_POINTS])
def test_killed_process_resumes_to_the_identical_model(sig, point, uninterrupted, fake_cifar_dir, tmp_path):
    ref, seconds = uninterrupted
    out = tmp_path / "run"
    proc = start(["--data-dir", fake_cifar_dir, "--out", out] + FLAGS)
    wait_for_training(proc, out / "checkpoint.npz")
    code, err = interrupt(proc, sig, delays(seconds)[point])
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert (out / ".lock").exists()  # left behind, but the system released its flock
        step = load_checkpoint(out / "checkpoint.npz").position.t
        assert step % 60 == 0  # the start or an epoch end
    else:
        step = check_interrupted(out, sig, code, err)
    print(f"{signal.Signals(sig).name} after {delays(seconds)[point]:.2f} s: checkpoint at step {step} of 4000")
    err = resume(out)
    if sig == signal.SIGKILL:
        assert "lock" not in err  # simply taken: no process id to guess from
    same_run(ref, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == step
    assert not (out / "status.json").exists() and not (out / ".lock").exists()


@pytest.mark.slow
def test_interrupted_resume_interrupted_again_resumes_to_the_identical_model(uninterrupted, fake_cifar_dir, tmp_path):
    ref, seconds = uninterrupted
    out = tmp_path / "run"
    proc = start(["--data-dir", fake_cifar_dir, "--out", out] + FLAGS)
    wait_for_training(proc, out / "checkpoint.npz")
    first = check_interrupted(out, signal.SIGTERM, *interrupt(proc, signal.SIGTERM, 0.3 * seconds))
    mtime = (out / "checkpoint.npz").stat().st_mtime_ns
    proc = start(["--resume", out, "-q"])
    wait_for_training(proc, out / "checkpoint.npz", after_mtime=mtime)  # the resumed run finished an epoch
    second = check_interrupted(out, signal.SIGINT, *interrupt(proc, signal.SIGINT, 0.2 * seconds))
    assert first < second < 4000
    print(f"SIGTERM at step {first}, SIGINT at step {second}")
    resume(out)
    same_run(ref, out)


def test_a_damaged_status_file_does_not_block_the_resume(fake_cifar_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    small = ["--n-val", "300", "--hidden", "16", "--n-s", "30", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy", "--no-plots"]
    real = train_mod.train_step
    count = [0]

    def step(*args):
        count[0] += 1
        if count[0] == 30:
            os.kill(os.getpid(), signal.SIGINT)  # a real signal, handled by the run's handler
        return real(*args)

    monkeypatch.setattr(train_mod, "train_step", step)
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + small) == 130
    monkeypatch.undo()
    assert "fastnet: interrupted at step 30; resume with: fastnet-train --resume" in capsys.readouterr().err
    (out / "status.json").write_text("[")
    assert train_main(["--resume", str(out), "-q", "--no-plots"]) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 30


def test_a_sigint_the_parent_ignored_stays_ignored():
    """nohup, or a job a non-interactive shell starts in the background: SIGINT arrives
    ignored, and the run must not start stopping on it (SIGTERM is still handled)."""
    from fastnet.training.signals import stop_on_signals

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
            stop.deferring = True
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert stop.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
