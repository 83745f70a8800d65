"""Checkpoints: everything needed to continue a run exactly where it stopped, in one ``.npz``.

``RUN_DIR/checkpoint.npz`` is written when training starts, at the end of every epoch and when
a run is stopped by SIGINT or SIGTERM (at a step boundary). It holds

- the parameters and running BN statistics, under the names of ``model.npz`` (``W1``,
  ``gamma1``, ``mu_av1``, ...), checked on loading exactly as a model file is;
- the optimiser's state, as arrays named ``opt.<name>`` (none for SGD; the slot is for Adam);
- the per-step history, ``step_eta`` and ``step_loss`` (float64);
- ``meta``, a 0-d unicode array holding JSON: the format, the network's architecture, the
  TrainConfig, the position in the schedule (update step ``t``, ``epoch``, the mini-batches
  ``j`` of that epoch already done, and the shuffling generator's ``bit_generator.state``
  *before* that epoch's permutation was drawn), the evaluation rows, the time spent so far and
  a fingerprint of the training data.

Given those, :func:`fastnet.training.loop.fit` redraws the interrupted epoch's permutation, skips the
``j`` mini-batches already done, and goes on: the result equals an uninterrupted run's
bitwise (same backend, same thread count). No pickles: the file is read with
``allow_pickle=False`` and every value is checked, so a damaged or foreign file is refused
with one sentence (:class:`CheckpointError`).

The file is written to ``checkpoint.npz.tmp``, flushed to disk (fsync) and renamed over the
previous checkpoint, so a crash or SIGKILL at any moment leaves the last complete one.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastnet.errors import FastnetError
from fastnet.model.files import network_from_arrays, network_meta, parse_meta, read_npz
from fastnet.model.network import Network
from fastnet.training.state import History, Position
from fastnet.util.files import atomic_savez

FORMAT = "fastnet-checkpoint-1"
NAME = "checkpoint.npz"


class CheckpointError(FastnetError):
    """A checkpoint is missing, damaged, or belongs to another run."""


@dataclass
class Checkpoint:
    """A checkpoint as loaded: the network, the history so far and where the run stood."""

    net: Network
    history: History
    position: Position
    config: dict  # TrainConfig.to_dict()
    data: dict = field(default_factory=dict)  # data_fingerprint() of the training data
    optimizer: str = "sgd"
    optimizer_state: dict[str, np.ndarray] = field(default_factory=dict)


def data_fingerprint(data) -> dict:
    """A cheap identity of a Dataset: sizes and a hash of the labels and normalisation.

    The per-feature mean and std are taken over every training pixel, so any change in the
    training images shows in them; hashing them costs microseconds, hashing the images would
    take a second.
    """
    h = hashlib.sha256()
    for a in (data.y_train, data.y_val, data.mean, data.std):
        h.update(np.ascontiguousarray(a).tobytes())
    fingerprint = {"n_train": int(len(data.y_train)), "n_val": int(len(data.y_val)), "sha256": h.hexdigest()}
    if getattr(data, "whitening", None) is not None:  # issue 17: the rows went through this whitening
        fingerprint["whitening"] = data.whitening.sha256()
    return fingerprint


def save_checkpoint(path, net: Network, history: History, position: Position, config: dict, *,
                    data: dict | None = None, optimizer: str = "sgd", optimizer_state: dict | None = None) -> None:
    """Write a checkpoint of a run at ``position`` (see the module docstring) atomically."""
    meta = {
        "format": FORMAT,
        "network": network_meta(net),
        "config": config,
        "position": {"t": position.t, "epoch": position.epoch, "j": position.j, "rng_state": position.rng_state},
        "evals": history.evals,
        "train_seconds": history.train_seconds,
        "eval_seconds": history.eval_seconds,
        "one_core_steps": history.one_core_steps,
        "data": data or {},
        "optimizer": optimizer,
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update(net.params())
    arrays.update(net.running_stats())
    arrays["step_eta"] = np.asarray(history.step_eta, np.float64)
    arrays["step_loss"] = np.asarray(history.step_loss, np.float64)
    for name, a in (optimizer_state or {}).items():
        arrays[f"opt.{name}"] = a
    atomic_savez(path, arrays)


def _int(value, name: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} is {value!r}, expected an integer >= {minimum}")
    return value


def _rng_state(state) -> dict:
    """Check that ``state`` can be given to a PCG64 generator (the one fit uses)."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("its random-number state is not that of a PCG64 generator")
    probe = np.random.PCG64()
    probe.state = state  # raises ValueError / TypeError / KeyError on anything malformed
    return state


def load_checkpoint(path) -> Checkpoint:
    """The checkpoint at ``path``; CheckpointError (one sentence) if it is missing or damaged."""
    path = Path(path)
    try:
        arrays = read_npz(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a readable fastnet checkpoint ({exc}); resume is impossible, start the run again") from None
    try:
        meta = parse_meta(arrays.pop("meta", None))
        if meta.get("format") != FORMAT:
            raise ValueError(f"its format is not {FORMAT!r}")
        if not isinstance(meta.get("network"), dict) or not isinstance(meta.get("config"), dict):
            raise ValueError("it does not describe a network and a configuration")
        net = network_from_arrays(meta["network"], arrays)
        pos = meta["position"]
        if not isinstance(pos, dict):
            raise ValueError("it has no position")
        position = Position(t=_int(pos.get("t"), "t"), epoch=_int(pos.get("epoch"), "epoch"), j=_int(pos.get("j"), "j"), rng_state=_rng_state(pos.get("rng_state")))
        step_eta, step_loss = arrays.pop("step_eta", None), arrays.pop("step_loss", None)
        for name, a in (("step_eta", step_eta), ("step_loss", step_loss)):
            if a is None or a.dtype != np.float64 or a.shape != (position.t,):
                raise ValueError(f"{name} is missing or does not hold one float64 per step done ({position.t})")
        evals = meta.get("evals")
        if not isinstance(evals, list) or not all(isinstance(r, dict) for r in evals):
            raise ValueError("its evaluation history is not a list of rows")
        history = History(evals=evals, step_eta=step_eta.tolist(), step_loss=step_loss.tolist(),
                          train_seconds=float(meta.get("train_seconds", 0.0)), eval_seconds=float(meta.get("eval_seconds", 0.0)),
                          one_core_steps=int(meta.get("one_core_steps", 0)))
        optimizer = meta.get("optimizer", "sgd")
        if not isinstance(optimizer, str):
            raise ValueError("its optimiser name is not a string")
        opt_state = {k[4:]: arrays.pop(k) for k in list(arrays) if k.startswith("opt.")}
        if arrays:
            raise ValueError(f"it has unexpected arrays {sorted(arrays)[:5]}")
        data = meta.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("its data fingerprint is not an object")
        if not all(math.isfinite(x) for x in history.step_eta):
            raise ValueError("its learning rates are not finite")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise CheckpointError(f"{path} is not a usable fastnet checkpoint: {str(exc)[:200]}; resume is impossible, start the run again") from None
    return Checkpoint(net=net, history=history, position=position, config=meta["config"], data=data, optimizer=optimizer, optimizer_state=opt_state)
