"""Every kind of hostile or broken input, through the real command line, in one table.

Each case builds its inputs in a fresh folder, runs ``fastnet-train`` / ``fastnet`` (in process;
a few as real processes) and expects: exit status 2, one sentence on stderr that says what is
wrong (argparse's own errors add its usage line above it), no traceback, and no new
``metrics.json`` or ``*.tmp`` file anywhere: nothing that looks like a finished run.

The loader's own tests (tests/data/, tests/backends/test_checks.py) go deeper into each
file format; here the point is that every failure reaches the user the same plain way.
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import fastnet.training.stepper as train_mod
from fastnet.cli import main, train_main
from fastnet.model.files import save_network
from fastnet.model.network import init_network
from fastnet.util import threads

FOLDER = "cifar-10-batches-py"
SMALL = ["--n-val", "300", "--hidden", "16", "--n-s", "30", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy", "--no-plots"]


class Evil:
    """Unpickling this runs a shell command (it must never run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def batch_pickle(data, labels) -> bytes:
    return pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2)


@dataclass
class Env:
    """The folder a case works in, and ways to make its inputs there."""

    tmp: Path
    good: Path  # fake_cifar_dir: a folder containing cifar-10-batches-py
    finished_src: Path  # a finished run to copy

    @property
    def out(self) -> Path:
        return self.tmp / "run"

    def data(self, **files) -> Path:
        """A copy of the good data set with files replaced (bytes) or removed (None)."""
        root = self.tmp / "data"
        if not root.exists():
            shutil.copytree(self.good / FOLDER, root / FOLDER)
        for name, content in files.items():
            if content is None:
                (root / FOLDER / name).unlink()
            else:
                (root / FOLDER / name).write_bytes(content)
        return root

    def batch(self, name: str, transform: Callable[[bytes], bytes]) -> Path:
        return self.data(**{name: transform((self.good / FOLDER / name).read_bytes())})

    def archive(self, members: list[tuple[tarfile.TarInfo, bytes | None]], truncate: int | None = None) -> Path:
        """An archive of these members under a name of its own: the official name would have
        it refused for its md5 before any member is read."""
        root = self.tmp / "archive"
        root.mkdir(exist_ok=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for info, content in members:
                tar.addfile(info, io.BytesIO(content) if content is not None else None)
        raw = buf.getvalue()
        path = root / "fake-cifar-10.tar.gz"
        path.write_bytes(raw[:truncate] if truncate else raw)
        return path

    def good_members(self) -> list:
        out = []
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            content = (self.good / FOLDER / name).read_bytes()
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(content)
            out.append((info, content))
        return out

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def config(self, content: str | bytes) -> list[str]:
        # no flags that would override the file's settings
        return ["--data-dir", str(self.good), "--out", str(self.out), "--config", str(self.file("config.json", content)), "--n-val", "300", "-q", "--no-plots"]

    def train(self, *flags) -> list[str]:
        return ["--data-dir", str(self.good), "--out", str(self.out)] + SMALL + list(flags)

    def finished(self) -> Path:
        shutil.copytree(self.finished_src, self.tmp / "finished")
        return self.tmp / "finished"

    def interrupted(self, name: str = "stopped", *flags, at: int = 30) -> Path:
        """A run stopped by a real SIGINT (sent to this process) after ``at`` steps."""
        out = self.tmp / name
        real = train_mod.train_step
        count = 0

        def step(*args):
            nonlocal count
            count += 1
            if count == at:
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args)

        train_mod.train_step = step
        try:
            code = train_main(["--data-dir", str(self.good), "--out", str(out)] + SMALL + list(flags))
        finally:
            train_mod.train_step = real
        assert code == 130 and (out / "checkpoint.npz").exists()
        return out

    def model_run(self, net, mean=None, std=None) -> Path:
        """A run folder whose model.npz holds ``net``."""
        run = self.tmp / "model_run"
        run.mkdir()
        save_network(run / "model.npz", net, mean, std)
        (run / "config.json").write_text(json.dumps({"data": {"source": str(self.good / FOLDER)}, "backend": "numpy"}))
        return run


def tar_member(name: str, content: bytes = b"x", kind=tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    return info, content if kind == tarfile.REGTYPE else None


def no_space(target: str, nth: int = 1):
    """Make the nth rename onto a file named ``target`` fail as on a full disk (ENOSPC)."""
    def install(monkeypatch):
        real, seen = os.replace, [0]

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == target:
                seen[0] += 1
                if seen[0] == nth:
                    raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
    return install


def incompatible_net(d=3072, K=10, hidden=(8,)):
    net = init_network(d, hidden, K, bn=False, rng=np.random.default_rng(0))
    return net


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list[str]]
    says: str
    command: str = "train"  # "train": fastnet-train; "fastnet": fastnet <argv>
    process: bool = False  # run as a real process rather than in this one
    fault: Callable | None = None  # installs a fault with monkeypatch


NESTED = "[" * 100_000 + "]" * 100_000
U8 = np.zeros((300, 3072), np.uint8)
LABELS = [i % 10 for i in range(300)]

CASES = [
    # --- data: damaged, hostile, of the wrong shape ------------------------------------------
    Case("data-missing-folder", lambda e: ["--data-dir", str(e.tmp / "nowhere"), "--out", str(e.out)] + SMALL, "CIFAR-10 not found"),
    Case("data-dir-is-a-file", lambda e: ["--data-dir", str(e.file("notadir", "x")), "--out", str(e.out)] + SMALL, "CIFAR-10 not found"),
    Case("data-missing-batch", lambda e: ["--data-dir", str(e.data(data_batch_3=None)), "--out", str(e.out)] + SMALL, "data_batch_3"),
    Case("data-truncated-batch", lambda e: ["--data-dir", str(e.batch("data_batch_2", lambda b: b[: len(b) // 2])), "--out", str(e.out)] + SMALL, "truncated or corrupt"),
    Case("data-truncated-test-batch", lambda e: ["--data-dir", str(e.batch("test_batch", lambda b: b[:-100])), "--out", str(e.out)] + SMALL, "test_batch"),
    Case("data-empty-batch", lambda e: ["--data-dir", str(e.data(data_batch_1=b"")), "--out", str(e.out)] + SMALL, "data_batch_1"),
    Case("data-random-bytes", lambda e: ["--data-dir", str(e.data(data_batch_1=np.random.default_rng(0).bytes(50_000))), "--out", str(e.out)] + SMALL, "data_batch_1"),
    Case("data-flipped-bytes", lambda e: ["--data-dir", str(e.batch("data_batch_4", lambda b: b[:40] + bytes(255 - c for c in b[40:200]) + b[200:])), "--out", str(e.out)] + SMALL, "data_batch_4"),
    Case("data-pickle-runs-code", lambda e: ["--data-dir", str(e.data(data_batch_1=pickle.dumps(Evil(e.tmp / "PWNED")))), "--out", str(e.out)] + SMALL, "refusing to unpickle", process=True),
    Case("data-pickle-runs-code-in-meta", lambda e: ["--data-dir", str(e.data(**{"batches.meta": pickle.dumps(Evil(e.tmp / "PWNED"))})), "--out", str(e.out)] + SMALL, "refusing to unpickle"),
    Case("data-pickle-of-a-list", lambda e: ["--data-dir", str(e.data(data_batch_1=pickle.dumps([1, 2, 3], protocol=2))), "--out", str(e.out)] + SMALL, "not a dict"),
    Case("data-wrong-shape", lambda e: ["--data-dir", str(e.data(data_batch_1=batch_pickle(np.zeros((300, 1024), np.uint8), LABELS))), "--out", str(e.out)] + SMALL, "shape (300, 1024)"),
    Case("data-wrong-dtype", lambda e: ["--data-dir", str(e.data(data_batch_5=batch_pickle(np.zeros((300, 3072)), LABELS))), "--out", str(e.out)] + SMALL, "float64"),
    Case("data-labels-out-of-range", lambda e: ["--data-dir", str(e.data(data_batch_1=batch_pickle(U8, [10] * 300))), "--out", str(e.out)] + SMALL, "0..9"),
    Case("data-labels-not-ints", lambda e: ["--data-dir", str(e.data(data_batch_1=batch_pickle(U8, ["cat"] * 300))), "--out", str(e.out)] + SMALL, "labels"),
    Case("data-fewer-labels-than-images", lambda e: ["--data-dir", str(e.data(data_batch_1=batch_pickle(U8, LABELS[:299]))), "--out", str(e.out)] + SMALL, "299 labels"),
    Case("data-no-data-entry", lambda e: ["--data-dir", str(e.data(data_batch_1=pickle.dumps({b"labels": LABELS}, protocol=2))), "--out", str(e.out)] + SMALL, "'data'"),
    Case("tar-path-traversal", lambda e: ["--data-dir", str(e.archive(e.good_members() + [tar_member(f"{FOLDER}/../../PWNED")])), "--out", str(e.out)] + SMALL, "unsafe path", process=True),
    Case("tar-absolute-path", lambda e: ["--data-dir", str(e.archive([tar_member(str(e.tmp / "PWNED"))] + e.good_members())), "--out", str(e.out)] + SMALL, "unsafe path"),
    Case("tar-symlink", lambda e: ["--data-dir", str(e.archive([tar_member(f"{FOLDER}/data_batch_1", kind=tarfile.SYMTYPE, link="/etc/passwd")] + e.good_members()[1:])), "--out", str(e.out)] + SMALL, "link"),
    Case("tar-member-outside-folder", lambda e: ["--data-dir", str(e.archive(e.good_members() + [tar_member("elsewhere/file")])), "--out", str(e.out)] + SMALL, "outside"),
    Case("tar-truncated", lambda e: ["--data-dir", str(e.archive(e.good_members(), truncate=200_000)), "--out", str(e.out)] + SMALL, "truncated or corrupt"),
    Case("tar-not-gzip", lambda e: ["--data-dir", str(e.file("fake-cifar-10.tar.gz", "not an archive")), "--out", str(e.out)] + SMALL, "could not extract"),
    Case("tar-official-name-other-md5", lambda e: ["--data-dir", str(e.file("cifar-10-python.tar.gz", "not an archive").parent), "--out", str(e.out)] + SMALL, "official archive's name but md5"),
    # --- output folder -------------------------------------------------------------------------
    Case("out-under-a-regular-file", lambda e: ["--data-dir", str(e.good), "--out", str(e.file("somefile", "x") / "run")] + SMALL, "cannot write to the run folder", process=True),
    Case("out-is-a-file", lambda e: ["--data-dir", str(e.good), "--out", str(e.file("somefile", "x"))] + SMALL, "is a file, not a folder"),
    Case("out-holds-a-run", lambda e: ["--data-dir", str(e.good), "--out", str(e.finished())] + SMALL, "already holds a run"),
    Case("disk-full-config", lambda e: e.train(), "No space left on device", fault=no_space("config.json")),
    Case("disk-full-first-checkpoint", lambda e: e.train(), "No space left on device", fault=no_space("checkpoint.npz", 1)),
    Case("disk-full-epoch-checkpoint", lambda e: e.train(), "resume with: fastnet-train --resume", fault=no_space("checkpoint.npz", 3)),
    Case("disk-full-history", lambda e: e.train(), "No space left on device", fault=no_space("history.csv")),
    Case("disk-full-model", lambda e: e.train(), "No space left on device", fault=no_space("model.npz")),
    Case("disk-full-metrics", lambda e: e.train(), "No space left on device", fault=no_space("metrics.json")),
    # --- command-line values (argparse refuses these itself) ----------------------------------
    Case("cli-hidden-zero", lambda e: e.train("--hidden", "50,0"), "positive"),
    Case("cli-hidden-text", lambda e: e.train("--hidden", "abc"), "layer sizes"),
    Case("cli-lam-negative", lambda e: e.train("--lam", "-1"), "must be >= 0"),
    Case("cli-lam-nan", lambda e: e.train("--lam", "nan"), "finite"),
    Case("cli-eta-max-inf", lambda e: e.train("--eta-max", "inf"), "finite"),
    Case("cli-batch-zero", lambda e: e.train("--batch", "0"), "must be >= 1"),
    Case("cli-batch-float", lambda e: e.train("--batch", "2.5"), "whole number"),
    Case("cli-n-s-zero", lambda e: e.train("--n-s", "0"), "must be >= 1"),
    Case("cli-cycles-zero", lambda e: e.train("--cycles", "0"), "must be >= 1"),
    Case("cli-seed-negative", lambda e: e.train("--seed", "-1"), "must be >= 0"),
    Case("cli-dtype-float16", lambda e: e.train("--dtype", "float16"), "invalid choice"),
    Case("cli-backend-unknown", lambda e: e.train("--backend", "gpu"), "invalid choice"),
    Case("cli-unknown-flag", lambda e: e.train("--learning-rate", "0.1"), "unrecognized arguments"),
    Case("cli-n-val-text", lambda e: e.train("--n-val", "many"), "whole number"),
    # --- command-line values TrainConfig or the data refuse ------------------------------------
    Case("cli-batch-larger-than-data", lambda e: e.train("--batch", "100000"), "larger than the training set"),
    Case("cli-init-normal-no-sigma", lambda e: e.train("--init", "normal"), "sigma"),
    Case("cli-alpha-one", lambda e: e.train("--alpha", "1"), "alpha must be in [0, 1)"),
    Case("cli-eta-min-above-max", lambda e: e.train("--eta-min", "0.5", "--eta-max", "0.1"), "larger than eta_max"),
    Case("cli-n-val-too-large", lambda e: e.train("--n-val", "1500"), "leaves no training rows"),
    Case("cli-batch-one-with-bn", lambda e: e.train("--batch", "1"), "at least 2 samples"),
    # --- --config files --------------------------------------------------------------------------
    Case("config-missing", lambda e: e.train("--config", str(e.tmp / "nope.json")), "does not exist"),
    Case("config-is-a-folder", lambda e: e.train("--config", str(e.tmp)), "not readable JSON"),
    Case("config-garbage", lambda e: e.config("garbage{"), "not readable JSON"),
    Case("config-binary", lambda e: e.config(b"\xff\xfe\x00\x81binary"), "not readable JSON"),
    Case("config-empty", lambda e: e.config(""), "not readable JSON"),
    Case("config-nested-deeply", lambda e: e.config(NESTED), "not readable JSON"),
    Case("config-a-list", lambda e: e.config("[1, 2]"), "does not hold a JSON object"),
    Case("config-a-string", lambda e: e.config('"hidden"'), "does not hold a JSON object"),
    Case("config-null", lambda e: e.config("null"), "does not hold a JSON object"),
    Case("config-unknown-key", lambda e: e.config('{"hiden": [50, 50]}'), "unknown configuration keys: hiden"),
    Case("config-train-not-object", lambda e: e.config('{"train": 5}'), '"train" must be a JSON object'),
    Case("config-hidden-string", lambda e: e.config('{"hidden": "abc"}'), "hidden must be a list of positive integers"),
    Case("config-hidden-number", lambda e: e.config('{"hidden": 5}'), "hidden must be a list of positive integers"),
    Case("config-hidden-floats", lambda e: e.config('{"hidden": [50.5, 20]}'), "hidden must be a list of positive integers"),
    Case("config-hidden-negative", lambda e: e.config('{"hidden": [50, -5]}'), "hidden layer sizes must be positive"),
    Case("config-hidden-empty", lambda e: e.config('{"hidden": []}'), "hidden layer sizes must be positive"),
    Case("config-hidden-huge", lambda e: e.config('{"hidden": [100000000]}'), "choose smaller --hidden"),
    Case("config-lam-string", lambda e: e.config('{"lam": "x"}'), 'lam must be a number, got "x"'),
    Case("config-lam-nan", lambda e: e.config('{"lam": NaN}'), "lam must be a finite number"),
    Case("config-eta-max-overflow", lambda e: e.config('{"eta_max": 1e400}'), "eta_max must be a finite number"),
    Case("config-eta-max-list", lambda e: e.config('{"eta_max": [0.1]}'), "eta_max must be a number"),
    Case("config-batch-true", lambda e: e.config('{"batch": true}'), "batch must be a whole number"),
    Case("config-n-s-fraction", lambda e: e.config('{"n_s": 2.5}'), "n_s must be a whole number"),
    Case("config-bn-string", lambda e: e.config('{"bn": "yes"}'), "bn must be true or false"),
    Case("config-seed-negative", lambda e: e.config('{"seed": -1}'), "seed must be a non-negative integer"),
    Case("config-seed-huge-int", lambda e: e.config('{"seed": ' + "9" * 5000 + "}"), "not readable JSON"),
    Case("config-backend-unknown", lambda e: e.config('{"backend": "gpu"}'), "unknown backend 'gpu'"),
    Case("config-dtype-float16", lambda e: e.config('{"dtype": "float16"}'), "dtype must be float32 or float64"),
    Case("config-init-number", lambda e: e.config('{"init": 5}'), "init must be a string"),
    Case("config-split-unknown", lambda e: e.config('{"split": "a4"}'), "unknown split"),
    # --- fastnet evaluate --------------------------------------------------------------------------
    Case("evaluate-not-a-run", lambda e: ["evaluate", str(e.tmp)], "no model.npz", command="fastnet"),
    Case("evaluate-other-input-size", lambda e: ["evaluate", str(e.model_run(incompatible_net(d=100), np.zeros(100), np.ones(100)))], "100 inputs", command="fastnet"),
    Case("evaluate-other-class-count", lambda e: ["evaluate", str(e.model_run(incompatible_net(K=5), np.zeros(3072), np.ones(3072)))], "5 classes", command="fastnet"),
    Case("evaluate-no-normalisation", lambda e: ["evaluate", str(e.model_run(incompatible_net()))], "no input normalisation", command="fastnet"),
    Case("evaluate-garbage-model", lambda e: evaluate_with_model(e, b"garbage"), "not an .npz (zip) archive", command="fastnet"),
    Case("evaluate-a-pickle-as-model", lambda e: evaluate_with_model(e, pickle.dumps(Evil(e.tmp / "PWNED"))), "not an .npz (zip) archive", command="fastnet"),
    Case("evaluate-pickled-model", lambda e: evaluate_with_model(e, pickled_npz(e)), "holds pickled Python objects", command="fastnet"),
    Case("evaluate-truncated-model", lambda e: evaluate_with_model(e, (e.finished_src / "model.npz").read_bytes()[:3000]), "not a readable fastnet model", command="fastnet"),
    # --- fastnet-train --resume --------------------------------------------------------------------
    Case("resume-nonexistent", lambda e: ["--resume", str(e.tmp / "nope")], "there is no such folder"),
    Case("resume-empty-folder", lambda e: ["--resume", str(e.tmp)], "not a fastnet run folder", process=True),
    Case("resume-a-file", lambda e: ["--resume", str(e.file("f", "x"))], "is a file, not a run folder"),
    Case("resume-finished-run", lambda e: ["--resume", str(e.finished())], "holds a finished run"),
    Case("resume-with-other-flags", lambda e: ["--resume", str(e.interrupted()), "--lam", "0.1", "--out", "x"], "drop --lam, --out"),
    Case("resume-no-checkpoint", lambda e: resume_with(e, lambda run: (run / "checkpoint.npz").unlink()), "has no checkpoint.npz"),
    Case("resume-garbage-checkpoint", lambda e: resume_with(e, lambda run: (run / "checkpoint.npz").write_bytes(b"PK\x03\x04garbage")), "not a readable fastnet checkpoint"),
    Case("resume-model-as-checkpoint", lambda e: resume_with(e, lambda run: shutil.copy(e.finished_src / "model.npz", run / "checkpoint.npz")), "not a usable fastnet checkpoint"),
    Case("resume-checkpoint-of-another-config", lambda e: resume_with(e, lambda run: shutil.copy(e.interrupted("other", "--lam", "0.1") / "checkpoint.npz", run / "checkpoint.npz")), "another configuration"),
    Case("resume-garbage-config", lambda e: resume_with(e, lambda run: (run / "config.json").write_text('{"train": {"lam": "x"}}')), "field 'train' is not a valid configuration (lam must be a number"),
    Case("resume-config-without-train", lambda e: resume_with(e, lambda run: (run / "config.json").write_text("{}")), "field 'train' must be an object of settings"),
    Case("resume-config-garbage", lambda e: resume_with(e, lambda run: (run / "config.json").write_bytes(b"\x00\xff")), "not readable JSON"),
    Case("resume-other-data", lambda e: ["--resume", str(e.interrupted()), "--data-dir", str(_other_data(e))], "not the data"),
    Case("resume-data-gone", lambda e: ["--resume", str(e.interrupted()), "--data-dir", str(e.tmp / "gone")], "CIFAR-10 not found"),
]


def evaluate_with_model(env: Env, content: bytes) -> list[str]:
    run = env.finished()
    (run / "model.npz").write_bytes(content)
    return ["evaluate", str(run)]


def pickled_npz(env: Env) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([Evil(env.tmp / "PWNED")], dtype=object))  # needs pickle to load
    return buf.getvalue()


def resume_with(env: Env, damage) -> list[str]:
    run = env.interrupted()
    damage(run)
    return ["--resume", str(run)]


def _other_data(env: Env) -> Path:
    from conftest import write_fake_cifar

    return write_fake_cifar(env.tmp / "other", seed=1).parent


@pytest.fixture(scope="module")
def finished_src(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL) == 0
    return out


def run_cli(case: Case, argv: list[str], capsys) -> tuple[int, str]:
    if case.process:
        cmd = [sys.executable, "-m", "fastnet.cli"] + (["train"] if case.command == "train" else []) + argv
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr
    capsys.readouterr()
    try:
        code = (train_main if case.command == "train" else main)(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_sentence(case, fake_cifar_dir, finished_src, tmp_path, capsys, monkeypatch):
    env = Env(tmp_path, fake_cifar_dir, finished_src)
    argv = case.argv(env)
    assert argv, "the case's setup failed"
    finished_before = set(tmp_path.rglob("metrics.json"))
    if case.fault:
        case.fault(monkeypatch)
    code, err = run_cli(case, argv, capsys)
    monkeypatch.undo()
    print(f"[{case.id}] exit {code}: {err.strip().splitlines()[-1] if err.strip() else '(nothing)'}")
    assert code == 2, err
    assert "Traceback" not in err and err.endswith("\n"), err
    lines = err.rstrip("\n").split("\n")
    if lines[0].startswith("usage:"):  # argparse: its usage line, then the error
        lines = [line for line in lines if not line.startswith(" ") and not line.startswith("usage:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(("fastnet: error: ", "fastnet-train: error: ", "fastnet train: error: ")), err
    assert case.says in lines[0], err
    assert len(lines[0]) < 600
    assert set(tmp_path.rglob("metrics.json")) == finished_before, "a run that failed looks finished"
    assert not [p for p in tmp_path.rglob("*.tmp")], "a half-written file was left behind"
    assert not (tmp_path / "PWNED").exists() and not (tmp_path.parent / "PWNED").exists(), "hostile input ran code"
    assert not list(tmp_path.rglob(".lock")), "the run folder stayed locked"


# ---------------------------------------------------------------- after a full disk, resume


def test_a_run_stopped_by_a_full_disk_resumes_to_the_identical_model(fake_cifar_dir, tmp_path, monkeypatch, capsys):
    # --resume takes no --threads: a resumed run chooses its BLAS threads again from the idle
    # cores, and the numpy backend's products round differently on one thread and on two. So
    # the choice is pinned for the reference, the stopped and the resumed run alike (left to the
    # load average, the three differ whenever the load crosses 0.5 during the test).
    monkeypatch.setattr(threads, "idle_cores", lambda: 1)
    reference = tmp_path / "reference"
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(reference)] + SMALL) == 0
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as fault:
        no_space("checkpoint.npz", 3)(fault)  # the end of the second epoch
        assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL) == 2
    err = capsys.readouterr().err
    assert "the last checkpoint (step 24) is kept" in err
    assert json.loads((out / "status.json").read_text())["status"] == "failed"
    assert train_main(["--resume", str(out), "-q", "--no-plots"]) == 0
    with np.load(out / "model.npz") as a, np.load(reference / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(a[k].tobytes() == b[k].tobytes() for k in a.files)
    assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()
