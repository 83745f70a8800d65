"""The command line as a user meets it: exit codes, one-line errors, the run folder."""
import json
import subprocess
import sys

import pytest

from fastnet.cli import main, train_main

SMALL = ["--n-val", "300", "--hidden", "16", "--n-s", "12", "--cycles", "1", "--batch", "50", "-q", "--backend", "numpy"]


@pytest.fixture(scope="module")
def run_dir(fake_cifar_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r1"
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out)] + SMALL) == 0
    return out


def test_a_run_folder_has_everything(run_dir):
    for name in ("config.json", "history.csv", "steps.csv", "metrics.json", "model.npz", "loss.png", "cost.png", "accuracy.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "train_seconds", "epochs", "backend", "dtype"):
        assert key in metrics
    assert metrics["backend"] == "numpy" and metrics["dtype"] == "float32"
    assert not list(run_dir.glob("*.tmp"))


def test_evaluate_reproduces_the_test_accuracy(run_dir, capsys):
    assert main(["evaluate", str(run_dir)]) == 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]
    assert f"test accuracy {recorded:.4f}" in capsys.readouterr().out


def test_a_folder_holding_a_run_is_not_overwritten(run_dir, fake_cifar_dir, capsys):
    assert train_main(["--data-dir", str(fake_cifar_dir), "--out", str(run_dir)] + SMALL) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [
    (["--hidden", "50,0"], "positive"),
    (["--lam", "-1"], "must be >= 0"),
    (["--eta-min", "0.5", "--eta-max", "0.1"], "larger than eta_max"),
    (["--batch", "100000"], "larger than the training set"),
    (["--init", "normal"], "sigma"),
    (["--hidden", "abc"], "layer sizes"),
    (["--cycles", "0"], "must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_sentence(flags, says, fake_cifar_dir, tmp_path, capsys):
    argv = ["--data-dir", str(fake_cifar_dir), "--out", str(tmp_path / "r")] + SMALL + flags
    with pytest.raises(SystemExit) as exc:  # argparse's own errors exit here
        code = train_main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_missing_data_says_where_it_looked(tmp_path, capsys):
    assert train_main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")] + SMALL) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and err.count("\n") == 1


def test_divergence_keeps_the_history_and_no_metrics(fake_cifar_dir, tmp_path, capsys):
    out = tmp_path / "div"
    code = train_main(["--data-dir", str(fake_cifar_dir), "--out", str(out), "--no-bn", "--eta-min", "1e4", "--eta-max", "1e6", "--lam", "0"] + SMALL)
    assert code == 2
    assert "diverged at step" in capsys.readouterr().err
    assert (out / "history.csv").exists() and (out / "steps.csv").exists() and (out / "config.json").exists()
    assert json.loads((out / "status.json").read_text())["status"] == "diverged"
    assert not (out / "metrics.json").exists()


def test_help_is_fast_and_imports_no_numba_or_matplotlib():
    code = ("import sys\nfrom fastnet import cli\ntry:\n    cli.train_main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('numba', 'matplotlib', 'scipy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "--eta-max" in out


def test_gradcheck_command_passes(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "4-layer BN lam=0.1" in out and "worst relative error" in out


def test_info_lists_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "cython"):
        assert f"{name}:" in out
    from fastnet.backends import load

    if load("cython").available:   # whether a run would compile first is said per backend
        assert "cython: available (fastnet.ext._ckernels" in out and "compiled at install: runs start at once" in out
    if load("numba").available:
        assert "kernels" in out.split("numba:")[1].splitlines()[0]
