"""The kinds of hostile input of issue 18, each through the real command line: exit status
2, one sentence on stderr, no traceback, and nothing written where it must not be.

The sweep traversal is shown to write nothing outside --out by checksums of a neighbouring
run's folder before and after."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import tree_sum

from fastnet.cli import main
from fastnet.runs.record import load_run
from fastnet.runs.schema import RunFileError

FOLDER = "cifar-10-batches-py"
SMALL = ["--n-val", "300", "--hidden", "8", "--n-s", "6", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy", "--no-plots"]



def cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_sentence(code: int, err: str, says: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith("fastnet"), err
    assert says in lines[0], err


@pytest.fixture(scope="module")
def finished(fake_cifar_dir, tmp_path_factory) -> Path:
    """A finished run (do not modify: copy it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data-dir", str(fake_cifar_dir), *SMALL, "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------ names that become paths

@pytest.mark.parametrize("name, says", [("../../victim/run", "path separator"), ("/abs/x", "path separator"),
                                        ("", "is empty"), (".", "not a folder name"), ("a/", "path separator"),
                                        ("a\u0000b", "control character")])
def test_a_sweep_name_outside_out_writes_nothing_there(name, says, fake_cifar_dir, finished, tmp_path, capsys):
    victim = tmp_path / "victim" / "run"
    shutil.copytree(finished, victim)
    before = tree_sum(tmp_path / "victim")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": {"hidden": [8], "n_s": 6, "cycles": 1, "batch": 50, "n_val": 300, "backend": "numpy"},
                                "runs": [{"name": name}]}))
    code, err = cli(["sweep", spec, "--out", tmp_path / "sweep" / "out", "--data-dir", fake_cifar_dir, "--workers", "1", "--no-plots"], capsys)
    one_sentence(code, err, says)
    assert tree_sum(tmp_path / "victim") == before
    assert not (tmp_path / "sweep").exists()  # refused before anything was created


def test_names_that_alias_one_folder_are_refused(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"runs": [{"name": "a"}, {"name": "A"}]}))
    one_sentence(*cli(["sweep", spec, "--out", tmp_path / "out"], capsys), "name the same folder")
    spec.write_text(json.dumps({"runs": [{"name": "a"}, {"name": "./a"}]}))
    one_sentence(*cli(["sweep", spec, "--out", tmp_path / "out"], capsys), "path separator")
    assert not (tmp_path / "out").exists()


def test_a_link_inside_out_pointing_outside_is_refused(fake_cifar_dir, finished, tmp_path, capsys):
    victim = tmp_path / "victim"
    shutil.copytree(finished, victim / "run")
    before = tree_sum(victim)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run").symlink_to(victim / "run")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": {"hidden": [8], "n_s": 6, "cycles": 1, "batch": 50, "n_val": 300}, "runs": [{"name": "run"}]}))
    code, err = cli(["sweep", spec, "--out", tmp_path / "out", "--data-dir", fake_cifar_dir, "--workers", "1"], capsys)
    one_sentence(code, err, "outside")
    assert tree_sum(victim) == before


# ------------------------------------------------------------------------- special files

@pytest.mark.parametrize("where, says", [("batches.meta", "FIFO"), ("test_batch", "missing test_batch")])
def test_a_fifo_in_the_data_is_one_sentence_not_a_hang(where, says, fake_cifar_dir, tmp_path, capsys):
    shutil.copytree(fake_cifar_dir / FOLDER, tmp_path / "d" / FOLDER)
    (tmp_path / "d" / FOLDER / where).unlink()
    os.mkfifo(tmp_path / "d" / FOLDER / where)
    code, err = cli(["train", "--data-dir", tmp_path / "d", *SMALL, "--out", tmp_path / "run"], capsys)
    one_sentence(code, err, says)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("file, special", [("model.npz", "fifo"), ("model.npz", "/dev/zero"), ("checkpoint.npz", "fifo")])
def test_special_run_files_are_refused(file, special, fake_cifar_dir, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / file).unlink(missing_ok=True)
    if special == "fifo":
        os.mkfifo(run / file)
    else:
        (run / file).symlink_to(special)
    if file == "model.npz":
        code, err = cli(["evaluate", run, "--data-dir", fake_cifar_dir], capsys)
    else:
        (run / "metrics.json").unlink()
        code, err = cli(["train", "--resume", run, "--data-dir", fake_cifar_dir, "-q"], capsys)
    one_sentence(code, err, "not a regular file")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_config_that_is_a_device_or_fifo_is_refused(special, tmp_path, capsys):
    path = tmp_path / "cfg.json"
    os.mkfifo(path) if special == "fifo" else path.symlink_to(special)
    one_sentence(*cli(["train", "--config", path, "--out", tmp_path / "run"], capsys), "not a regular file")


# ------------------------------------------------------------------------------ archives

FAKE = "fake-cifar-10.tar.gz"   # the official name would be refused for its md5 before any member is read


def archive_of(members, tmp_path: Path) -> Path:
    root = tmp_path / "arch"
    root.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    (root / FAKE).write_bytes(buf.getvalue())
    return root / FAKE


def good_members(fake_cifar_dir: Path) -> list:
    out = []
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        content = (fake_cifar_dir / FOLDER / name).read_bytes()
        info = tarfile.TarInfo(f"{FOLDER}/{name}")
        info.size = len(content)
        out.append((info, content))
    return out


def test_a_flipped_bit_in_the_gzip_stream_is_refused(fake_cifar_dir, tmp_path, capsys):
    path = archive_of(good_members(fake_cifar_dir), tmp_path)
    root = path.parent
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0x01   # inside the CRC-32 of the gzip trailer: the data inflate as before
    path.write_bytes(bytes(raw))
    one_sentence(*cli(["train", "--data-dir", path, *SMALL, "--out", tmp_path / "run"], capsys), "could not extract")
    assert not (tmp_path / "run").exists() and not (root / FOLDER).exists()


def test_a_member_of_negative_size_is_refused(fake_cifar_dir, tmp_path, capsys):
    info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    block[124:136] = b"\xff" * 12   # base-256 size -1
    block[148:156] = b"        "
    block[148:155] = b"%06o\0" % sum(block) + b" "
    raw = gzip.compress(bytes(block) + b"\0" * 1024)
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / FAKE).write_bytes(raw)
    one_sentence(*cli(["train", "--data-dir", tmp_path / "arch" / FAKE, *SMALL, "--out", tmp_path / "run"], capsys), "extract")


def test_millions_of_members_stop_at_the_cap(tmp_path, capsys):
    members = [(tarfile.TarInfo(f"{FOLDER}/x{i}"), b"") for i in range(1200)]
    path = archive_of(members, tmp_path)
    one_sentence(*cli(["train", "--data-dir", path, *SMALL, "--out", tmp_path / "run"], capsys), "more than 1000 members")


def test_a_malformed_sparse_header_is_one_sentence(tmp_path, capsys):
    info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    info.type = tarfile.GNUTYPE_SPARSE
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    block[386:398] = b"zzzzzzzzzzzz"  # the sparse map's first offset: not a number
    block[148:156] = b"        "
    block[148:155] = b"%06o\0" % sum(block) + b" "
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / FAKE).write_bytes(gzip.compress(bytes(block) + b"\0" * 1024))
    one_sentence(*cli(["train", "--data-dir", tmp_path / "arch" / FAKE, *SMALL, "--out", tmp_path / "run"], capsys), "extract")


# ---------------------------------------------------------------------- empty or odd data

def test_an_empty_test_batch_is_refused_at_load(fake_cifar_dir, finished, tmp_path, capsys):
    import numpy as np
    from conftest import py2_batch_pickle

    shutil.copytree(fake_cifar_dir / FOLDER, tmp_path / "d" / FOLDER)
    (tmp_path / "d" / FOLDER / "test_batch").write_bytes(py2_batch_pickle(np.zeros((0, 3072), np.uint8), np.zeros(0, int)))
    one_sentence(*cli(["train", "--data-dir", tmp_path / "d", *SMALL, "--out", tmp_path / "run"], capsys), "holds no images")
    one_sentence(*cli(["evaluate", finished, "--data-dir", tmp_path / "d"], capsys), "holds no images")


# ------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("flags, says", [(["--hidden", "50,,50"], "layer sizes"), (["--n-s", "5_0"], "digits only"),
                                         (["--n-s", "1e400"], "digits only"), (["--n-s", "9" * 500], "at most"),
                                         (["--batch", "1", "--no-bn"], "at least 2 samples"),
                                         (["--n-s", "1000000000"], "--no-time-limit")])
def test_numbers_are_parsed_strictly_and_bounded(flags, says, fake_cifar_dir, tmp_path, capsys):
    code, err = cli(["train", "--data-dir", fake_cifar_dir, *SMALL, *flags, "--out", tmp_path / "run"], capsys)
    one_sentence(code, err, says)
    assert not (tmp_path / "run").exists()


def test_a_huge_lambda_is_not_advised_to_grow(fake_cifar_dir, tmp_path, capsys):
    code, err = cli(["train", "--data-dir", fake_cifar_dir, *SMALL, "--lam", "1e308", "--out", tmp_path / "run"], capsys)
    one_sentence(code, err, "lower --lam")
    assert "raise --lam" not in err


# --------------------------------------------------------------------- doctored run files

# Each case is a whole report (~10 s); the schemas' own tests (tests/runs, tests/experiments)
# hold every field to its type and range, these two show the report turns a violation into one sentence.
@pytest.mark.parametrize("file, content", [("metrics.json", '{"test_accuracy": 1e999}'), ("history.csv", "epoch,step\nx,1\n")])
def test_report_of_doctored_run_files_is_one_sentence_or_a_report(file, content, finished, tmp_path, capsys):
    exp = tmp_path / "exp" / "ex3-3layer-bn"
    shutil.copytree(finished, exp / "run")
    (exp / "run" / file).write_text(content)
    code, err = cli(["report", tmp_path / "exp"], capsys)
    assert code in (0, 2) and "Traceback" not in err, err


def stopped_with_config(finished: Path, tmp_path: Path, edit) -> Path:
    """A copy of the finished run made resumable (no metrics.json), its config.json edited."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    cfg = json.loads((run / "config.json").read_text())
    edit(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


@pytest.mark.parametrize("edit", [lambda d: d.update(train="x"), lambda d: d.update(train={"hidden": "x"}), lambda d: d.update(data=[1])])
def test_resume_of_a_doctored_config_is_one_sentence(edit, fake_cifar_dir, finished, tmp_path, capsys):
    run = stopped_with_config(finished, tmp_path, edit)
    code, err = cli(["train", "--resume", run, "--data-dir", fake_cifar_dir, "-q"], capsys)
    assert code == 2 and "Traceback" not in err, err


def test_a_model_with_a_negative_variance_is_refused(fake_cifar_dir, finished, tmp_path, capsys):
    import numpy as np

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with np.load(run / "model.npz") as z:
        arrays = dict(z)
    arrays["v_av1"] = -np.abs(arrays["v_av1"])
    np.savez(run / "model.npz", **arrays)
    one_sentence(*cli(["evaluate", run, "--data-dir", fake_cifar_dir], capsys), "negative running variance")


# ---------------------------------------------------------------- nothing lost, nothing left

def test_out_at_a_folder_of_user_files_is_refused(fake_cifar_dir, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    one_sentence(*cli(["train", "--data-dir", fake_cifar_dir, *SMALL, "--out", tmp_path / "mine"], capsys), "not a fastnet run")
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


def test_overwrite_with_missing_data_keeps_the_old_run(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = tree_sum(run)
    code, err = cli(["train", "--data-dir", tmp_path / "nothing", *SMALL, "--out", run, "--overwrite"], capsys)
    one_sentence(code, err, "not found")
    assert tree_sum(run) == before


def test_a_run_failing_before_its_first_step_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_sentence(*cli(["train", "--data-dir", tmp_path / "nothing", *SMALL], capsys), "not found")
    assert os.listdir(tmp_path) == []  # no runs/<date-time>, no runs/


def test_report_of_an_empty_folder_writes_nothing(tmp_path, capsys):
    one_sentence(*cli(["report", tmp_path], capsys), "holds no fastnet runs")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------- run-file schemas on --resume and report

HEADER = "epoch,step,eta,train_loss,train_cost,train_accuracy,val_loss,val_cost,val_accuracy\n"


@pytest.mark.parametrize("edit, says", [(lambda d: d["train"].update(cycles=0), "field 'train'"),
                                        (lambda d: d["train"].update(lam="x"), "field 'train'"),
                                        (lambda d: d.update(n_s_resolved=7), "n_s_resolved"),
                                        (lambda d: d.update(backend="gpu"), "backend"),
                                        (lambda d: d["data"].update(split="a2"), "data.split"),
                                        (lambda d: d["data"].update(n_train=-1), "data.n_train")])
def test_resume_of_a_config_that_breaks_its_schema_is_one_sentence(edit, says, fake_cifar_dir, finished, tmp_path, capsys):
    run = stopped_with_config(finished, tmp_path, edit)
    code, err = cli(["train", "--resume", run, "--data-dir", fake_cifar_dir, "-q", "--no-plots"], capsys)
    one_sentence(code, err, says)
    assert "config.json" in err


@pytest.mark.parametrize("status, says", [({"status": "done"}, "'status'"), ({"status": "interrupted", "steps": 13}, "schedule of 12"),
                                          ({"status": "failed", "steps": 5, "checkpoint_step": 6}, "checkpoint_step"),
                                          ({"status": "interrupted", "steps": "5"}, "'steps'")])
def test_resume_and_report_of_an_edited_status_is_one_sentence(status, says, fake_cifar_dir, finished, tmp_path, capsys):
    run = tmp_path / "exp" / "ex3-3layer-bn" / "run"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    (run / "status.json").write_text(json.dumps(status))
    code, err = cli(["train", "--resume", run, "--data-dir", fake_cifar_dir, "-q", "--no-plots"], capsys)
    one_sentence(code, err, says)
    assert "status.json" in err
    with pytest.raises(RunFileError, match="status.json"):  # what the report reads the run with
        load_run(run)


@pytest.mark.parametrize("rows, says", [("0.5,12,0.1,1,1,0.5,1,1,0.5\n0.25,6,0.1,1,1,0.5,1,1,0.5\n", "row before"),
                                        ("0.5,13,0.1,1,1,0.5,1,1,0.5\n", "schedule of 12"),
                                        ("0.5,12,0.1,1,1,2,1,1,0.5\n", "train_accuracy"),
                                        ("0.5,12,0.1,-1,1,0.5,1,1,0.5\n", "train_loss"),
                                        ("0.5,12.5,0.1,1,1,0.5,1,1,0.5\n", "whole step"),
                                        (",12,0.1,1,1,0.5,1,1,0.5\n", "epoch"),
                                        ("0.5,12,x,1,1,0.5,1,1,0.5\n", "not a number")])
def test_an_edited_history_is_one_sentence_for_the_report(rows, says, finished, tmp_path):
    """load_run is what the report reads every run with (a RunFileError: exit status 2)."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "history.csv").write_text(HEADER + rows)
    with pytest.raises(RunFileError, match=f"history.csv.*{re.escape(says)}"):
        load_run(run)
    (run / "history.csv").write_text("eta,val_accuracy\n0.1,0.5\n")
    with pytest.raises(RunFileError, match="epoch and step"):
        load_run(run)


def test_the_report_of_an_edited_history_exits_2(finished, tmp_path, capsys):
    run = tmp_path / "exp" / "ex3-3layer-bn" / "run"
    shutil.copytree(finished, run)
    (run / "history.csv").write_text(HEADER + "0.5,13,0.1,1,1,0.5,1,1,0.5\n")
    one_sentence(*cli(["report", tmp_path / "exp"], capsys), "schedule of 12")


def test_the_schema_knows_every_backend():
    from fastnet.runs.schema import BACKENDS
    from fastnet.training.config import BACKEND_NAMES

    assert BACKENDS == BACKEND_NAMES
