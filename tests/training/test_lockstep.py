"""Lock-step groups: each model trained in a group ends as a standalone fit with its configuration
ends; grouping rules; sweeps with groups write the same folders, resume and report divergence.

Tolerances. A model of a group is not bitwise its standalone run: the stacked first-layer
products (one (n, d) @ (d, M m1) product instead of M of width m1) may sum in another order,
and the first layer's update W <- (1 - 2 eta lam) W - (eta / n) G^T X rounds differently from
the op-by-op dW = G^T X / n + 2 lam W; W -= eta dW. Each step differs by a few units of
roundoff, and training (a few dozen steps here) amplifies that moderately. Measured: relative
differences up to 2e-15 in float64 and 1e-6 in float32. Bounds: float64 1e-10 (five orders of
margin; a wrong lambda, learning rate or statistic differs by 1e-3 or more), float32 1e-4
relative for parameters and losses; an accuracy may differ by one image in float32 (a logit
near a tie).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from fastnet.backends import resolve
from fastnet.data.cifar10 import load_cifar10
from fastnet.errors import ConfigError, DivergenceError
from fastnet.experiments.sweep import run_sweep
from fastnet.training.checkpoint import load_checkpoint, save_checkpoint
from fastnet.training.config import TrainConfig, new_network
from fastnet.training.lockstep import (
    check_group,
    fit_lockstep,
    group_key,
    lockstep_blocker,
    plan_units,
)
from fastnet.training.loop import fit
from fastnet.training.state import History, Interrupted, StopRequest

BASE = dict(hidden=(16, 12), n_s=20, cycles=1, batch=50, n_val=300, backend="numpy")
SCALARS = [dict(lam=0.001, eta_max=0.1), dict(lam=0.02, eta_max=0.05), dict(lam=0.0, eta_min=1e-3, eta_max=0.1)]
TOL = {"float64": dict(rtol=1e-10, atol=1e-10, acc=1e-12), "float32": dict(rtol=1e-4, atol=1e-5, acc=1.0 / 300 + 1e-9)}


def configs(dtype="float64", bn=True, **kw):
    return [TrainConfig(**{**BASE, "dtype": dtype, "bn": bn, **kw, **s}).validate() for s in SCALARS]


def data_for(root, dtype):
    return load_cifar10(root, split="a3", n_val=300, dtype=np.dtype(dtype), progress=False)


def standalone(cfg, data):
    net = new_network(cfg, data.X_train.shape[1], len(data.label_names))
    history = fit(net, data, cfg, resolve(cfg.backend).ops, progress=False)
    return net, history


def lockstep(cfgs, data, **kw):
    nets = [new_network(cfg, data.X_train.shape[1], len(data.label_names)) for cfg in cfgs]
    outcomes = fit_lockstep(nets, data, cfgs, resolve(cfgs[0].backend).ops, **kw)
    return nets, outcomes


def assert_same_arrays(net, ref, rtol, own=True):
    """``net``'s parameters and running statistics equal ``ref``'s to ``rtol`` of each array's
    largest entry; ``own``: they are ordinary arrays of their own (as lock-step leaves them)."""
    mine, theirs = {**net.params(), **net.running_stats()}, {**ref.params(), **ref.running_stats()}
    assert sorted(mine) == sorted(theirs)
    for name, a in theirs.items():
        b = mine[name]
        assert b.flags.c_contiguous and (b.flags.owndata or not own) and b.dtype == a.dtype and b.shape == a.shape, name
        scale = float(np.max(np.abs(a))) or 1.0
        assert float(np.max(np.abs(b - a))) <= rtol * scale, (name, float(np.max(np.abs(b - a))) / scale)


def assert_same_history(h, ref, tol):
    assert h.step_eta == ref.step_eta  # the schedule is the same function of t
    np.testing.assert_allclose(h.step_loss, ref.step_loss, rtol=tol["rtol"], atol=tol["atol"])
    assert len(h.evals) == len(ref.evals) and h.evals
    for row, r in zip(h.evals, ref.evals):
        assert list(row) == list(r)
        assert (row["epoch"], row["step"], row["eta"]) == (r["epoch"], r["step"], r["eta"])
        for k in ("train_loss", "train_cost", "val_loss", "val_cost"):
            assert math.isclose(row[k], r[k], rel_tol=tol["rtol"], abs_tol=tol["atol"]), (k, row[k], r[k])
        for k in ("train_accuracy", "val_accuracy"):
            assert abs(row[k] - r[k]) <= tol["acc"], (k, row[k], r[k])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bn", [True, False], ids=["bn", "no-bn"])
def test_each_model_equals_its_standalone_fit(fake_cifar_dir, dtype, bn):
    data = data_for(fake_cifar_dir, dtype)
    cfgs = configs(dtype, bn, eval_every=7, eval_train_images=500)
    nets, outcomes = lockstep(cfgs, data)
    for cfg, net, outcome in zip(cfgs, nets, outcomes):
        ref_net, ref_history = standalone(cfg, data)
        assert outcome.error is None
        assert_same_arrays(net, ref_net, TOL[dtype]["rtol"])
        assert_same_history(outcome.history, ref_history, TOL[dtype])
        assert outcome.history.steps == 40 and len(outcome.history.evals) == 2 + 40 // 7  # 2 epoch ends, eval_every 7
        assert outcome.wall_seconds > 0 and outcome.history.train_seconds > 0 and outcome.history.eval_seconds > 0


@pytest.mark.parametrize("update", ["blas-accumulate", "numpy"])
def test_both_first_layer_updates_equal_standalone_fit(fake_cifar_dir, monkeypatch, update):
    # BLAS accumulating in place when Numba's gemm by address is there, else two NumPy passes: force each
    import fastnet.training.lockstep as lk

    if update == "numpy":
        monkeypatch.setattr(lk, "_accumulating_gemm", lambda: None)
    else:
        assert lk._accumulating_gemm() is not None
    data = data_for(fake_cifar_dir, "float64")
    cfgs = configs()[:2]
    nets, outcomes = lockstep(cfgs, data)
    for cfg, net, outcome in zip(cfgs, nets, outcomes):
        ref_net, ref_history = standalone(cfg, data)
        assert_same_arrays(net, ref_net, TOL["float64"]["rtol"])
        assert_same_history(outcome.history, ref_history, TOL["float64"])


def test_the_models_differ_as_their_lambdas_say(fake_cifar_dir):
    # guards the test above against comparing a model with itself: the lambdas matter
    data = data_for(fake_cifar_dir, "float64")
    nets, _ = lockstep(configs(), data)
    assert np.max(np.abs(nets[0].layers[0].W - nets[1].layers[0].W)) > 1e-3


def test_grouping_rules():
    cfg = TrainConfig(**BASE)
    assert lockstep_blocker(cfg) is None and lockstep_blocker(replace(cfg, bn=False)) is None
    for other, word in ((dict(optimizer="adam", eta_min=1e-5, eta_max=1e-3), "adam"), (dict(bn_placement="after"), "after"),
                        (dict(hidden=(16, 16, 16), skip=True), "skip"), (dict(augment=True), "augment"), (dict(bn_stats="precise", precise_images=100), "PreciseBN")):
        assert word in lockstep_blocker(replace(cfg, **other).validate())
    assert group_key(cfg) == group_key(replace(cfg, lam=0.1, eta_min=0.0, eta_max=0.5))
    for other in (dict(seed=1), dict(hidden=(16, 13)), dict(n_s=21), dict(dtype="float64"), dict(bn=False), dict(eval_every=3), dict(backend="numba")):
        assert group_key(cfg) != group_key(replace(cfg, **other)), other
    with pytest.raises(ConfigError, match="differ in seed"):
        check_group([cfg, replace(cfg, seed=3)])
    with pytest.raises(ConfigError, match="adam"):
        check_group([replace(cfg, optimizer="adam", eta_max=1e-3)] * 2)


def test_plan_units_splits_groups_over_the_workers():
    cfg = TrainConfig(**BASE)
    lams = {f"l{i}": replace(cfg, lam=0.001 * i) for i in range(8)}
    adam = {f"a{i}": replace(cfg, optimizer="adam", eta_max=1e-3, lam=0.001 * i) for i in range(2)}
    other = {"s1": replace(cfg, seed=1)}
    configs_ = {**lams, **adam, **other}
    names = list(configs_)
    size = lambda units: sorted(len(u) for u in units)  # noqa: E731
    assert plan_units(list(lams), lams, workers=2) == [[f"l{i}" for i in range(4)], [f"l{i}" for i in range(4, 8)]]
    assert plan_units(list(lams), lams, workers=1) == [list(lams)]
    assert size(plan_units(list(lams), lams, workers=1, max_group=3)) == [2, 3, 3]
    assert plan_units(list(lams), lams, workers=2, lockstep=False) == [[n] for n in lams]
    units = plan_units(names, configs_, workers=2)
    assert [u for u in units if len(u) > 1] == [[f"l{i}" for i in range(4)], [f"l{i}" for i in range(4, 8)]]
    assert [["a0"], ["a1"], ["s1"]] == [u for u in units if u[0][0] in "as"]  # not groupable / alone in its bucket
    assert sorted(n for u in units for n in u) == sorted(names)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_a_diverging_model_leaves_the_group_as_fit_would_stop(fake_cifar_dir):
    data = data_for(fake_cifar_dir, "float32")  # float32: overflows within a few steps
    cfgs = [TrainConfig(**{**BASE, "dtype": "float32", "bn": False, "lam": 0.0, "eta_min": 10.0, "eta_max": 1e4, "init": "normal", "sigma": 50.0}).validate()]
    cfgs += [replace(cfgs[0], lam=0.001, eta_min=1e-5, eta_max=1e-3), replace(cfgs[0], lam=0.01, eta_min=1e-5, eta_max=1e-3)]
    with pytest.raises(DivergenceError) as alone:
        standalone(cfgs[0], data)
    outcomes_so_far = [History() for _ in cfgs]  # the histories fit_lockstep fills, to look at from the callback
    left = []
    nets, outcomes = lockstep(cfgs, data, histories=outcomes_so_far, on_leave=lambda i, err: left.append((i, err, len(outcomes_so_far[1].step_loss))))
    assert isinstance(outcomes[0].error, DivergenceError) and str(outcomes[0].error) == str(alone.value)
    assert [(i, err) for i, err, _ in left] == [(0, outcomes[0].error)]
    assert left[0][2] == outcomes[0].history.steps < outcomes[1].history.steps  # told at once, while the others went on
    assert outcomes[0].history.steps < 40 and not math.isfinite(outcomes[0].history.step_loss[-1])
    for cfg, net, outcome in zip(cfgs[1:], nets[1:], outcomes[1:]):
        ref_net, ref_history = standalone(cfg, data)
        assert outcome.error is None
        assert_same_arrays(net, ref_net, TOL["float32"]["rtol"])
        assert_same_history(outcome.history, ref_history, TOL["float32"])


def test_a_stopped_group_checkpoints_each_model_and_each_resumes_alone(fake_cifar_dir, tmp_path):
    data = data_for(fake_cifar_dir, "float64")
    cfgs = configs()
    stop = StopRequest()
    histories = [History() for _ in cfgs]
    nets = [new_network(cfg, data.X_train.shape[1], 10) for cfg in cfgs]

    def checkpointer(i):
        def checkpoint(position):
            save_checkpoint(tmp_path / f"{i}.npz", nets[i], histories[i], position, cfgs[i].to_dict())
            if position.epoch == 1:
                stop.signum = 15  # as SIGTERM would, after the first epoch's checkpoint
        return checkpoint

    with pytest.raises(Interrupted):
        fit_lockstep(nets, data, cfgs, resolve("numpy").ops, histories, checkpoints=[checkpointer(i) for i in range(3)], stop=stop)
    for i, cfg in enumerate(cfgs):
        ckpt = load_checkpoint(tmp_path / f"{i}.npz")
        assert (ckpt.position.t, ckpt.position.epoch, ckpt.position.j) == (24, 1, 0)
        fit(ckpt.net, data, cfg, resolve("numpy").ops, ckpt.history, progress=False, start=ckpt.position)
        ref_net, ref_history = standalone(cfg, data)
        assert_same_arrays(ckpt.net, ref_net, TOL["float64"]["rtol"], own=False)  # loaded from the checkpoint, trained by fit
        assert_same_history(ckpt.history, ref_history, TOL["float64"])


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_sweep_in_lockstep_writes_the_same_folders_as_without(fake_cifar_dir, tmp_path):
    runs = [(f"lam={s['lam']:g}", cfg) for s, cfg in zip(SCALARS, configs())]
    quiet = dict(data_dir=fake_cifar_dir, workers=1, echo=lambda s: None)
    grouped = run_sweep(runs, tmp_path / "grouped", plots=True, **quiet)
    alone = run_sweep(runs, tmp_path / "alone", plots=True, lockstep=False, **quiet)
    assert _files(tmp_path / "grouped") == _files(tmp_path / "alone")
    assert sorted(grouped.executed) == sorted(n for n, _ in runs)
    log = (tmp_path / "grouped" / "sweep.log").read_text()
    assert log.count("started") == 3 and log.count("lockstep=3") == 3
    assert "lockstep=" not in (tmp_path / "alone" / "sweep.log").read_text()
    for index, (name, _) in enumerate(runs):
        g = json.loads((tmp_path / "grouped" / name / "metrics.json").read_text())
        a = json.loads((tmp_path / "alone" / name / "metrics.json").read_text())
        assert set(g) == set(a) | {"lockstep"} and g["lockstep"]["group"] == 3 and g["lockstep"]["index"] == index
        assert g["status"] == "finished" and g["steps"] == a["steps"] and g["epochs"] == a["epochs"]
        assert math.isclose(g["test_accuracy"], a["test_accuracy"]) and math.isclose(g["val_loss"], a["val_loss"], rel_tol=1e-10)
        assert g["wall_seconds"] <= g["lockstep"]["group_wall_seconds"]
        for f in ("config.json",):
            assert (tmp_path / "grouped" / name / f).read_text() == (tmp_path / "alone" / name / f).read_text()
    rows_g, rows_a = grouped.by_name(), alone.by_name()
    assert {n: r["status"] for n, r in rows_g.items()} == {n: r["status"] for n, r in rows_a.items()} == {n: "finished" for n, _ in runs}


def test_a_partly_finished_group_redoes_its_unfinished_runs_together(fake_cifar_dir, tmp_path):
    runs = [(f"lam={s['lam']:g}", cfg) for s, cfg in zip(SCALARS, configs())]
    quiet = dict(data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    run_sweep(runs, tmp_path, **quiet)
    first = {n: json.loads((tmp_path / n / "metrics.json").read_text()) for n, _ in runs}
    finished, unfinished = runs[0][0], [n for n, _ in runs[1:]]
    mtime = (tmp_path / finished / "metrics.json").stat().st_mtime_ns
    for n in unfinished:  # as a kill before the end of training leaves them
        (tmp_path / n / "metrics.json").unlink()
        (tmp_path / n / "model.npz").unlink()
    logged = len((tmp_path / "sweep.log").read_text().splitlines())
    again = run_sweep(runs, tmp_path, **quiet)
    assert again.skipped == [finished] and sorted(again.executed) == sorted(unfinished)
    assert (tmp_path / finished / "metrics.json").stat().st_mtime_ns == mtime
    new_lines = (tmp_path / "sweep.log").read_text().splitlines()[logged:]
    assert sorted(line.split()[2] for line in new_lines if " started " in line) == sorted(unfinished)
    assert all("lockstep=2" in line for line in new_lines if " started " in line)  # the two together
    for n in unfinished:
        m = json.loads((tmp_path / n / "metrics.json").read_text())
        assert m["lockstep"]["group"] == 2
        assert math.isclose(m["val_loss"], first[n]["val_loss"], rel_tol=1e-10) and m["val_accuracy"] == first[n]["val_accuracy"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_a_diverging_run_of_a_group_is_a_result_in_its_folder(fake_cifar_dir, tmp_path):
    wild = TrainConfig(**{**BASE, "bn": False, "lam": 0.0, "eta_min": 10.0, "eta_max": 1e4, "init": "normal", "sigma": 50.0}).validate()
    runs = [("wild", wild), ("calm", replace(wild, lam=0.001, eta_min=1e-5, eta_max=1e-3)), ("calmer", replace(wild, lam=0.01, eta_min=1e-5, eta_max=1e-3))]
    result = run_sweep(runs, tmp_path, data_dir=fake_cifar_dir, workers=1, plots=False, echo=lambda s: None)
    assert {r["name"]: r["status"] for r in result.rows} == {"wild": "diverged", "calm": "finished", "calmer": "finished"}
    assert "lockstep=3" in (tmp_path / "sweep.log").read_text()
    status = json.loads((tmp_path / "wild" / "status.json").read_text())
    assert status["status"] == "diverged" and "training diverged at step" in status["message"] and "last good checkpoint (step 0)" in status["message"]
    assert not (tmp_path / "wild" / "metrics.json").exists() and (tmp_path / "wild" / "history.csv").exists()
    assert all((tmp_path / n / "metrics.json").exists() and not (tmp_path / n / "status.json").exists() for n in ("calm", "calmer"))
