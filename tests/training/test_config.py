"""The lists of TrainConfig's fields come from the dataclass itself."""
from __future__ import annotations

import argparse
from dataclasses import fields

from fastnet.cli import add_train_arguments, config_flags
from fastnet.training import config
from fastnet.training.config import (
    BONUS_DEFAULTS,
    BONUS_FIELDS,
    CONFIG_FIELDS,
    TrainConfig,
)


def test_field_lists_follow_the_dataclass():
    assert CONFIG_FIELDS == tuple(f.name for f in fields(TrainConfig))
    kinds = config._FIELD_KINDS
    assert "hidden" not in kinds  # a tuple, checked on its own
    assert kinds["bn"] is bool and kinds["lam"] is float and kinds["n_s"] is int and kinds["backend"] is str
    assert kinds["sigma"] is float and kinds["decay_steps"] is int  # optional ones keep their type
    assert set(kinds) == set(CONFIG_FIELDS) - {"hidden"}
    assert config._OPTIONAL == ("sigma", "n_s", "decay_steps", "whiten_dims")
    assert BONUS_FIELDS[0] == "bn_placement" and "eval_train_images" in BONUS_FIELDS and len(BONUS_FIELDS) == 25
    assert BONUS_FIELDS[-5:] == ("label_smoothing", "mixup", "dropout", "decay", "tta")  # issue 17
    assert {"contrast", "whiten", "whiten_eps", "whiten_dims"} <= set(BONUS_FIELDS)  # issue 17
    assert BONUS_DEFAULTS["precise_images"] == 10_000 and BONUS_DEFAULTS["decay_steps"] is None


def test_every_field_has_a_flag():
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    dests = {a.dest for a in p._actions}
    assert config_flags() == CONFIG_FIELDS
    assert set(CONFIG_FIELDS) <= dests


def test_bonus_settings_at_their_defaults_are_left_out():
    d = TrainConfig().to_dict()
    assert not set(BONUS_FIELDS) & set(d)
    assert TrainConfig(skip=True, hidden=(20, 20, 20)).to_dict()["skip"] is True
