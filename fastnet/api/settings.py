"""The settings of a run as Python keywords: one TrainConfig from keywords and a ``--config``
file, validated as the command line validates them, and the numpydoc text and signature that
list every setting (generated from TrainConfig's field metadata: one source of truth)."""
from __future__ import annotations

import inspect
import os
from dataclasses import MISSING, fields

from fastnet.errors import ConfigError, FastnetError


def train_config(values: dict, config_file=None, *, no_time_limit: bool = False):
    """A validated TrainConfig: the settings of ``config_file`` (a JSON file, keys as in a run's
    ``config.json``; optional) overlaid with ``values`` (None values are left out, as flags not
    given). The backend left unset is ``$FASTNET_BACKEND`` when set. A schedule estimated to take
    longer than the time limit is refused unless ``no_time_limit``. The sentences of the errors
    are the command line's (it calls this function)."""
    from fastnet.training.config import TrainConfig, check_time_limit
    from fastnet.util.files import read_json

    merged: dict = {}
    if config_file:
        data = read_json(config_file)
        train = data.get("train", data)
        if not isinstance(train, dict):
            raise FastnetError(f"{config_file}: \"train\" must be a JSON object of settings, got {type(train).__name__}")
        merged.update(train)
    merged.update({k: v for k, v in values.items() if v is not None})
    if merged.get("backend") is None and os.environ.get("FASTNET_BACKEND"):
        merged["backend"] = os.environ["FASTNET_BACKEND"]
    try:
        cfg = TrainConfig.from_dict(merged)
    except TypeError as exc:
        raise FastnetError(f"invalid configuration: {exc}") from None
    cfg = cfg.validate()
    check_time_limit(cfg, confirmed=no_time_limit)
    return cfg


def check_threads(threads) -> int | None:
    """``threads`` as ``--threads`` takes it: None (the idle cores) or a whole number >= 1."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")
    return threads


def settings_doc(indent: str = "    ") -> str:
    """The numpydoc lines of every TrainConfig setting: name, type, default and meaning."""
    from fastnet.training.config import TrainConfig

    lines = []
    for f in fields(TrainConfig):
        kind = str(f.type).replace("tuple[int, ...]", "tuple of int")
        bonus = " Bonus (Exercise 4)." if f.metadata.get("bonus") else ""
        lines += [f"{f.name} : {kind}, default {f.default!r}", f"{indent}{f.metadata['doc']}.{bonus}"]
    return "\n".join(indent + line for line in lines)


def with_settings(func):
    """``func`` (taking ``**settings``) with a signature that names every setting and its
    default, keyword-only, before its own keywords, and ``{settings}`` in its docstring
    replaced by :func:`settings_doc`; ``help()`` and notebooks' completion then show them."""
    from fastnet.training.config import TrainConfig

    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default if f.default is not MISSING else None)
                for f in fields(TrainConfig)]
    func.__signature__ = sig.replace(parameters=[*[p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY], *settings,
                                                 *[p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]])
    func.__doc__ = (func.__doc__ or "").replace("{settings}", settings_doc().lstrip())
    return func
