"""One writer per run folder: RUN_DIR/.lock (an flock) refuses a second process; a lock file left by
a process that died is no lock and is taken without a word."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from fastnet.cli import train_main
from fastnet.errors import FastnetError
from fastnet.runs.lock import LOCK, RunLock

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
SMALL = ["--n-val", "300", "--hidden", "16", "--n-s", "12", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy", "--no-plots"]
# about 2-4 s of training: long enough to collide with
LONG = ["--n-val", "300", "--backend", "numpy", "--hidden", "50,50", "--batch", "20", "--n-s", "1500", "--cycles", "1", "--no-plots", "-q"]
TRAIN = [sys.executable, "-m", "fastnet.cli", "train"]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def wait_for(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)


@pytest.mark.slow
def test_a_second_process_is_refused_while_the_first_writes(fake_cifar_dir, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(TRAIN + ["--data-dir", str(fake_cifar_dir), "--out", str(out)] + LONG, env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoint.npz", first)
    assert (out / LOCK).read_text().split()[0] == str(first.pid)
    for argv in (["--data-dir", str(fake_cifar_dir), "--out", str(out), "--overwrite"] + LONG,  # would delete its files
                 ["--resume", str(out), "-q"]):
        second = subprocess.run(TRAIN + argv, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"is in use by another fastnet process (pid {first.pid})" in one_line(second.stderr)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_two_processes_started_together_one_trains_the_other_is_refused(fake_cifar_dir, tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen(TRAIN + ["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL, env=ENV,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 2], results
    err = one_line(results[1][1])
    assert "is in use by another fastnet process" in err or "already holds a run" in err
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("content", [
    lambda: f"{dead_pid()} {socket.gethostname()}\n",
    lambda: "",                # the writer died between creating and writing it
    lambda: "not a pid\x00\xff",
])
def test_a_lock_file_nobody_holds_is_simply_taken(content, fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(content(), encoding="latin-1")
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL) == 0
    assert "lock" not in capsys.readouterr().err
    assert (out / "metrics.json").exists() and not (out / LOCK).exists()


def test_the_lock_of_a_killed_process_is_released_by_the_system(tmp_path):
    code = f"import os, signal; from fastnet.runs.lock import RunLock; RunLock({str(tmp_path)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)"
    assert subprocess.run([sys.executable, "-c", code], env=ENV, check=False).returncode == -9
    assert (tmp_path / LOCK).exists()  # left behind, but unlocked
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK).read_text().split()[0] == str(os.getpid())


def test_a_lock_from_another_host_is_refused_with_what_to_do(fake_cifar_dir, tmp_path, capsys):
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / LOCK, timeout=0):  # held as a process on another machine sharing the folder would
        (out / LOCK).write_text("12345 some-other-machine\n")
        assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL) == 2
        err = one_line(capsys.readouterr().err)
        assert "process 12345 on some-other-machine" in err and f"delete {out / LOCK}" in err
        assert (out / LOCK).read_text() == "12345 some-other-machine\n"  # left alone
    assert not (out / "config.json").exists()


def test_the_lock_is_released_after_a_failure_and_a_divergence(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL + ["--batch", "100000"]) == 2
    assert not (out / LOCK).exists()
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), "--overwrite"] + SMALL
                      + ["--no-bn", "--eta-min", "1e4", "--eta-max", "1e6", "--lam", "0"]) == 2
    assert "diverged" in capsys.readouterr().err
    assert not (out / LOCK).exists()


def test_lock_in_the_same_process_is_refused_and_released(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK).read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(FastnetError, match=rf"in use by another fastnet process \(pid {os.getpid()}\)"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK).exists()
