"""The input-whitening settings of TrainConfig (issue 17): left out of config.json at their
defaults, one sentence per bad value, their command-line flags and the time estimate."""
from __future__ import annotations

import argparse

import pytest

from fastnet.cli import add_train_arguments, config_from_args
from fastnet.errors import ConfigError
from fastnet.training.config import TrainConfig, estimated_seconds, input_width

WHITEN_FIELDS = ("contrast", "whiten", "whiten_eps", "whiten_dims")


def test_defaults_leave_every_configuration_as_it_was():
    d = TrainConfig().to_dict()
    assert not set(WHITEN_FIELDS) & set(d)
    assert TrainConfig.from_dict(d).to_dict() == d
    on = TrainConfig(whiten="pca", whiten_dims=512, contrast=True).validate().to_dict()
    assert (on["whiten"], on["whiten_dims"], on["contrast"]) == ("pca", 512, True) and "whiten_eps" not in on


@pytest.mark.parametrize("kw, says", [
    ({"whiten": "pcaa"}, "unknown whitening 'pcaa'; choose one of none, pca, zca"),
    ({"whiten": "zca", "whiten_eps": 0.0}, "whiten_eps must be positive (it is added to eigenvalues that may be 0), got 0.0"),
    ({"whiten": "zca", "whiten_eps": -1e-3}, "whiten_eps must be positive"),
    ({"whiten": "zca", "whiten_dims": 512}, "--whiten-dims keeps the top PCA components and needs --whiten pca (zca keeps all 3072 values, image-shaped)"),
    ({"whiten_dims": 512}, "needs --whiten pca"),
    ({"whiten": "pca", "whiten_dims": 0}, "whiten_dims must be 1..3072 components, got 0"),
    ({"whiten": "pca", "whiten_dims": 3073}, "whiten_dims must be 1..3072 components, got 3073"),
    ({"whiten": "pca", "augment": True}, "PCA-whitened rows are not images and cannot be translated, only flipped"),
    ({"whiten": "pca", "whiten_dims": "512"}, "whiten_dims must be a whole number"),
    ({"contrast": 1}, "contrast must be true or false"),
])
def test_bad_settings_get_one_sentence(kw, says):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kw).validate()
    assert says in str(info.value) and "\n" not in str(info.value)


def test_pca_with_flips_only_and_zca_with_shifts_are_accepted():
    TrainConfig(whiten="pca", augment=True, augment_shift=0).validate()
    TrainConfig(whiten="zca", augment=True).validate()
    TrainConfig(contrast=True, augment=True).validate()
    TrainConfig(whiten="pca", augment_shift=3).validate()  # no augmentation: the shift is not used


def parse(argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(argv)


def test_flags_parse_into_the_configuration():
    cfg = config_from_args(parse(["--whiten", "pca", "--whiten-dims", "512"]))
    assert (cfg.whiten, cfg.whiten_dims, cfg.contrast, cfg.whiten_eps) == ("pca", 512, False, 10.0)
    cfg = config_from_args(parse(["--contrast", "--whiten", "zca", "--whiten-eps", "0.01"]))
    assert (cfg.contrast, cfg.whiten, cfg.whiten_eps) == (True, "zca", 0.01)
    assert config_from_args(parse(["--no-contrast"])).contrast is False
    assert config_from_args(parse([])).to_dict() == TrainConfig().validate().to_dict()


@pytest.mark.parametrize("argv", [["--whiten", "lda"], ["--whiten-dims", "0"], ["--whiten-eps", "0"], ["--whiten-dims", "x"]])
def test_bad_flags_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2 and "--whiten" in capsys.readouterr().err


def test_help_lists_the_flags_in_their_own_group(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    group = out[out.index("input whitening (issue 17"):out.index("\noutput:")]
    for flag in ("--contrast, --no-contrast", "--whiten {none,pca,zca}", "--whiten-eps", "--whiten-dims"):
        assert flag in group


def test_the_time_estimate_uses_the_whitened_width():
    base = TrainConfig(hidden=(512, 256), n_s=450, cycles=1)
    pca = TrainConfig(hidden=(512, 256), n_s=450, cycles=1, whiten="pca", whiten_dims=512)
    zca = TrainConfig(hidden=(512, 256), n_s=450, cycles=1, whiten="zca")
    assert (input_width(base), input_width(pca), input_width(zca)) == (3072, 512, 3072)
    assert estimated_seconds(pca) < estimated_seconds(base) < estimated_seconds(zca)
    assert estimated_seconds(TrainConfig(contrast=True)) == estimated_seconds(TrainConfig())  # contrast is no matrix product
