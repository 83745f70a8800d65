"""metrics.json's ``step_form``: how the run's steps were taken, as its Stepper took them."""
from __future__ import annotations

import json

import pytest
from conftest import small_cfg
from threadpoolctl import threadpool_limits

import fastnet.runs.train as run_train
import fastnet.training.stepper as stepper
from fastnet.backends import load


def _form(fake, tmp_path, cfg) -> str:
    out = tmp_path / "run"
    run_train.run_to_folder(cfg, out, data=fake, progress=False, plots=False)
    return json.loads((out / "metrics.json").read_text())["step_form"]


def test_a_numpy_run_steps_op_by_op(fake, tmp_path):
    assert _form(fake, tmp_path, small_cfg()) == "op by op"


@pytest.mark.skipif(not load("cython").available, reason="the extension is not built: no fused step")
@pytest.mark.parametrize("idle, form", [(2, "one core, gather beside"), (1, "one core")])
def test_a_one_thread_fused_run_gathers_beside_its_steps_where_a_core_is_idle(fake, tmp_path, monkeypatch, idle, form):
    monkeypatch.setattr(stepper, "idle_cores", lambda: idle)
    with threadpool_limits(1, user_api="blas"):
        assert _form(fake, tmp_path, small_cfg(backend="cython")) == form
