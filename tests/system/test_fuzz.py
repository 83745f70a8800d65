"""A fuzzer for the whole command line (hypothesis): generated argv, config and sweep files,
mutated run folders and special files. Every call must end with exit status 0, 2, 130 or
143 (never a traceback) and write nothing outside its folder (a neighbouring folder's
checksum before and after).

The default run is short (``FASTNET_FUZZ_EXAMPLES``, default 12 cases per test, 48 in all); a long one:
``FASTNET_FUZZ_EXAMPLES=3000 pytest tests/system/test_fuzz.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet.cli import main

EXAMPLES = int(os.environ.get("FASTNET_FUZZ_EXAMPLES", "12"))
OK = (0, 2, 130, 143)
SWEEP_OK = (*OK, 1)  # a sweep or experiment with failed runs exits 1, by design (their rows say why)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck), database=None)
#: run-folder cases build reports and resume runs: a third as many
FOLDER_FUZZ = settings(FUZZ, max_examples=max(4, EXAMPLES // 3))

FLAGS = ["--hidden", "--n-s", "--cycles", "--batch", "--lam", "--eta-min", "--eta-max", "--seed", "--n-val", "--eval-every",
         "--alpha", "--eps", "--sigma", "--init", "--split", "--decay-steps", "--warmup", "--augment-shift", "--precise-images",
         "--schedule", "--optimizer", "--bn-stats", "--dtype", "--threads"]
VALUES = st.one_of(st.sampled_from(["0", "1", "2", "-1", "50,,50", "5_0", "1e400", "9" * 30, "nan", "inf", "", ",", "8",
                                    "0.1", "1e308", "he", "normal", "a2", "a3", "adam", "cosine", "precise", "float64", "x"]),
                   st.text(max_size=8), st.integers(-5, 10**6).map(str))
TEXTS = st.one_of(st.just(""), st.text(max_size=20), st.sampled_from(["..", ".", "/", "a/", "./a", "../../x", "/tmp/x", "a\\b"]))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.text(max_size=10)),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
KEYS = st.sampled_from(["hidden", "n_s", "cycles", "batch", "lam", "eta_max", "seed", "n_val", "bn", "split", "name", "train", "data",
                        "test_accuracy", "status", "steps", "backend", "x"])
SPEC = st.one_of(JSON, st.fixed_dictionaries({}, optional={"base": st.dictionaries(KEYS, JSON, max_size=4),
                                                           "runs": st.lists(st.dictionaries(KEYS, st.one_of(JSON, TEXTS), max_size=3), max_size=3),
                                                           "grid": st.dictionaries(KEYS, st.lists(JSON, max_size=3), max_size=2)}))
SMALL = ["--n-val", "300", "--hidden", "8", "--n-s", "3", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy", "--no-plots"]



@pytest.fixture(scope="module")
def world(fake_cifar_dir, tmp_path_factory):
    """A finished run to mutate copies of, and a neighbour folder that must never change.
    The time limit is lowered to 20 s of estimate, so that no generated case trains long."""
    import fastnet.training.config as config

    saved, config.TIME_LIMIT_SECONDS = config.TIME_LIMIT_SECONDS, 20.0
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "finished"
    assert main(["train", "--data-dir", str(fake_cifar_dir), *SMALL, "--out", str(run)]) == 0
    neighbour = root / "neighbour"
    shutil.copytree(run, neighbour / "run")
    yield {"root": root, "run": run, "neighbour": neighbour, "sum": tree_sum(neighbour), "data": fake_cifar_dir}
    config.TIME_LIMIT_SECONDS = saved


def call(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def check(world, code, err, argv) -> None:
    assert code in (SWEEP_OK if argv[0] == "sweep" else OK) and "Traceback" not in err, f"{argv}: exit {code}\n{err}"
    assert tree_sum(world["neighbour"]) == world["sum"], f"{argv} wrote outside its folder"


def case_dir(world) -> Path:
    folder = world["root"] / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=3), out=TEXTS)
def test_fuzz_train_flags(world, capsys, pairs, out):
    folder = case_dir(world)
    argv = ["train", "--data-dir", world["data"], *SMALL, *[x for p in pairs for x in p], "--out", folder / "o" / out if out else folder / "o"]
    check(world, *call(argv, capsys), argv)


@FUZZ
@given(cfg=st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=5)))
def test_fuzz_config_files(world, capsys, cfg):
    folder = case_dir(world)
    (folder / "c.json").write_text(json.dumps(cfg))
    argv = ["train", "--data-dir", world["data"], *SMALL, "--config", folder / "c.json", "--out", folder / "o"]
    check(world, *call(argv, capsys), argv)


@FUZZ
@given(spec=SPEC)
def test_fuzz_sweep_specs(world, capsys, spec):
    folder = case_dir(world)
    (folder / "s.json").write_text(json.dumps(spec))
    argv = ["sweep", folder / "s.json", "--out", folder / "o", "--data-dir", world["data"], "--workers", "1", "--no-plots"]
    check(world, *call(argv, capsys), argv)


@FOLDER_FUZZ
@given(file=st.sampled_from(["config.json", "metrics.json", "status.json", "history.csv", "model.npz", "checkpoint.npz"]),
       how=st.sampled_from(["json", "bytes", "fifo", "zero", "dir", "delete", "truncate"]), value=JSON,
       raw=st.binary(max_size=64), command=st.sampled_from(["evaluate", "resume", "report"]))
def test_fuzz_run_folders(world, capsys, file, how, value, raw, command):
    folder = case_dir(world)
    run = folder / "exp" / "ex3-3layer-bn" / "run"
    shutil.copytree(world["run"], run)
    target = run / file
    target.unlink(missing_ok=True)
    if how == "json":
        target.write_text(json.dumps(value))
    elif how == "bytes":
        target.write_bytes(raw)
    elif how == "fifo":
        os.mkfifo(target)
    elif how == "zero":
        target.symlink_to("/dev/zero")
    elif how == "dir":
        target.mkdir()
    elif how == "truncate":
        target.write_bytes((world["run"] / file).read_bytes()[: len(raw)])
    if command == "resume":
        (run / "metrics.json").unlink(missing_ok=True) if (run / "metrics.json").is_file() or (run / "metrics.json").is_symlink() else None
        argv = ["train", "--resume", run, "--data-dir", world["data"], "-q", "--no-plots"]
    elif command == "evaluate":
        argv = ["evaluate", run, "--data-dir", world["data"]]
    else:
        argv = ["report", folder / "exp"]
    check(world, *call(argv, capsys), argv)


@pytest.mark.parametrize("argv", [["train", "--n-s", "5_0"], ["train", "--config", "/dev/zero"], ["sweep", "/dev/zero"],
                                  ["evaluate", "/nonexistent"], ["report", "/nonexistent"]])
def test_a_few_real_processes(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "fastnet.cli", *argv, *(["--out", str(tmp_path / "o")] if argv[0] == "train" else [])],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode in OK and "Traceback" not in done.stderr, done.stderr
