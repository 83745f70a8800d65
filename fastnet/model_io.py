"""Saving and loading a trained network as a plain ``.npz`` file (no pickles).

The file holds every parameter and running statistic under its name (``W1``, ``gamma1``,
``mu_av1``, ...), the input normalisation (``norm_mean``, ``norm_std``) and a JSON description
of the architecture (``meta``, a 0-d unicode array). Loading uses ``allow_pickle=False`` and
checks every array against the described architecture, so a file from another network, or a
damaged one, is refused with one sentence.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .network import Layer, Network

FORMAT = "fastnet-model-1"


class ModelFileError(FastnetError):
    """A model file is missing, damaged, or does not describe a network fastnet can rebuild."""


def save_network(path, net: Network, norm_mean=None, norm_std=None) -> None:
    """Write the network atomically: to ``path.tmp`` first, then renamed over ``path``."""
    meta = {"format": FORMAT, "sizes": net.sizes, "bn": net.bn, "eps": net.eps, "alpha": net.alpha,
            "dtype": str(net.dtype), "init": net.init, "sigma": net.sigma}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update(net.params())
    arrays.update(net.running_stats())
    if norm_mean is not None:
        arrays["norm_mean"] = np.asarray(norm_mean, np.float64)
        arrays["norm_std"] = np.asarray(norm_std, np.float64)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_network(path) -> tuple[Network, np.ndarray | None, np.ndarray | None]:
    """The network saved at ``path``, with its input normalisation (mean, std) if stored."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ModelFileError(f"model file {path} is not a readable fastnet model ({exc})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        sizes = [int(s) for s in meta["sizes"]]
        bn, dtype = bool(meta["bn"]), np.dtype(meta["dtype"])
        if len(sizes) < 2 or min(sizes) < 1 or dtype not in (np.float32, np.float64):
            raise ValueError(f"sizes {sizes} / dtype {dtype} are not those of a fastnet network")

        def take(name, shape):
            a = arrays.pop(name, None)
            if a is None:
                raise ValueError(f"it lacks {name}")
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} and {dtype}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} holds NaN or inf")
            return np.ascontiguousarray(a)

        layers = []
        k = len(sizes) - 1
        for l in range(1, k + 1):
            m_in, m_out = sizes[l - 1], sizes[l]
            hidden_bn = bn and l < k
            layer = Layer(W=take(f"W{l}", (m_out, m_in)), b=None if hidden_bn else take(f"b{l}", (m_out,)))
            if hidden_bn:
                layer.gamma, layer.beta = take(f"gamma{l}", (m_out,)), take(f"beta{l}", (m_out,))
                if f"mu_av{l}" in arrays:
                    layer.mu_av, layer.v_av = take(f"mu_av{l}", (m_out,)), take(f"v_av{l}", (m_out,))
            layers.append(layer)
        mean = std = None
        if "norm_mean" in arrays:
            mean, std = arrays.pop("norm_mean"), arrays.pop("norm_std", None)
            if mean.shape != (sizes[0],) or std is None or std.shape != (sizes[0],):
                raise ValueError("its input normalisation does not match the input size")
        if arrays:
            raise ValueError(f"it has unexpected arrays {sorted(arrays)}")
        net = Network(layers, bn=bn, eps=float(meta["eps"]), alpha=float(meta["alpha"]), init=str(meta.get("init", "he")), sigma=meta.get("sigma"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"model file {path} does not describe a fastnet network: {exc}") from None
    return net, mean, std
