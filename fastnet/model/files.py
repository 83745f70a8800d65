"""Saving and loading a trained network as a plain ``.npz`` file (no pickles).

The file holds every parameter and running statistic under its name (``W1``, ``gamma1``,
``mu_av1``, ...), the input normalisation (``norm_mean``, ``norm_std``) and a JSON description
of the architecture (``meta``, a 0-d unicode array). Loading uses ``allow_pickle=False`` and
checks every array against the described architecture, so a file from another network, or a
damaged one, is refused with one sentence.

A run with input whitening (issue 17) also stores it, as arrays named ``whiten.*``
(``whiten.meta``, JSON settings; ``whiten.mean``, ``whiten.even``, ``whiten.odd``,
``whiten.eigenvalues``: :meth:`fastnet.data.whiten.Whitening.to_arrays`). This layer stores
and returns them as they are (:func:`load_model`); the runs layer rebuilds and checks the
whitening. Files without them are unchanged, and :func:`load_network` refuses a file with
them (it would drop what the inputs must go through).
"""
from __future__ import annotations

import json
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fastnet.errors import ConfigError, FastnetError
from fastnet.model.network import (
    HAS_BIAS,
    HAS_BN,
    PLACEMENTS,
    Layer,
    Network,
    check_architecture,
    layer_kinds,
)
from fastnet.util.files import atomic_savez
from fastnet.util.reader import open_regular

FORMAT = "fastnet-model-1"
INPUTS_PREFIX = "whiten."  # the arrays of the input whitening (issue 17), kept as they are


class ModelFileError(FastnetError):
    """A model file is missing, damaged, or does not describe a network fastnet can rebuild."""


def network_meta(net: Network) -> dict:
    """The JSON description of a network's architecture, as stored in ``meta``."""
    return {"format": FORMAT, "sizes": net.sizes, "bn": net.bn, "eps": net.eps, "alpha": net.alpha,
            "dtype": str(net.dtype), "init": net.init, "sigma": net.sigma,
            "bn_placement": net.bn_placement, "skip": net.skip}


def save_network(path, net: Network, norm_mean=None, norm_std=None, inputs: dict | None = None) -> None:
    """Write the network to ``path`` (an .npz of plain arrays, no pickles), atomically and durably.
    ``inputs``: the arrays of the input whitening (names starting ``whiten.``), if any."""
    arrays = {"meta": np.array(json.dumps(network_meta(net)))}
    arrays.update(net.params())
    arrays.update(net.running_stats())
    if norm_mean is not None:
        arrays["norm_mean"] = np.asarray(norm_mean, np.float64)
        arrays["norm_std"] = np.asarray(norm_std, np.float64)
    for name, a in (inputs or {}).items():
        if not name.startswith(INPUTS_PREFIX):
            raise ValueError(f"input-transform arrays are named {INPUTS_PREFIX}*, got {name!r}")
        arrays[name] = a
    atomic_savez(path, arrays)  # a full disk leaves no half-written model behind


# Everything np.load can raise on a damaged or hostile .npz: zip damage (BadZipFile,
# NotImplementedError for unknown versions or compression, RuntimeError for encryption,
# zlib.error), npy damage (ValueError, EOFError, struct.error) and absurd claimed shapes
# (MemoryError, OverflowError: the array is allocated before its bytes are read).
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError, RuntimeError,
              zlib.error, struct.error, MemoryError, OverflowError)
MAX_NPZ_BYTES = 1 << 31  # uncompressed; a model of hidden layers of 10,000 units is 250 MB
MAX_NPZ_MEMBERS = 10_000  # arrays; a 100-layer network with Adam's moments has about 1,500


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read without pickles.

    Raises FileNotFoundError, or ValueError naming the damage (any exception of NPZ_ERRORS
    is turned into one); members larger in total than MAX_NPZ_BYTES are refused unread.
    """
    try:
        with open_regular(path, "npz", ValueError) as f:  # no FIFO, no device, within the cap
            if not zipfile.is_zipfile(f):  # else np.load would take it for a pickle
                raise ValueError("it is not an .npz (zip) archive")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
            size = sum(info.file_size for info in infos)
            if size > MAX_NPZ_BYTES or len(infos) > MAX_NPZ_MEMBERS:
                raise ValueError(f"it claims {len(infos)} arrays of {size} bytes, more than any fastnet file holds")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError("it holds pickled Python objects, which fastnet never writes and does not load") from None
        raise ValueError(str(exc)[:200]) from None
    except NPZ_ERRORS as exc:
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):  # np.load hands back a member that is no .npy as bytes
            raise ValueError(f"its member {name[:40]!r} is not a numpy array")
    return arrays


def load_network(path) -> tuple[Network, np.ndarray | None, np.ndarray | None]:
    """The network saved at ``path``, with its input normalisation (mean, std) if stored.
    ModelFileError for a file with an input whitening: :func:`load_model` returns it too."""
    net, mean, std, inputs = load_model(path)
    if inputs:
        raise ModelFileError(f"model file {path} holds an input whitening the network's inputs must go through; "
                             f"load it with fastnet.model.files.load_model, or fastnet.load_run(RUN_DIR), which applies it")
    return net, mean, std


def load_model(path) -> tuple[Network, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    """The network saved at ``path``, its input normalisation (mean, std) if stored, and the
    arrays of its input whitening ({} if none; checked by the runs layer, which rebuilds it)."""
    path = Path(path)
    try:
        arrays = read_npz(path)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except ValueError as exc:
        raise ModelFileError(f"model file {path} is not a readable fastnet model ({exc})") from None
    try:
        meta = parse_meta(arrays.pop("meta", None))
        net = network_from_arrays(meta, arrays)
        mean = std = None
        inputs = {k: arrays.pop(k) for k in sorted(arrays) if k.startswith(INPUTS_PREFIX)}
        if "norm_mean" in arrays:
            mean, std = arrays.pop("norm_mean"), arrays.pop("norm_std", None)
            d = net.sizes[0] if not inputs else mean.shape[0] if mean.ndim == 1 else -1  # whitened: of the pixels, not the network's input
            if std is None or mean.shape != (d,) or std.shape != (d,) or mean.dtype != np.float64 or std.dtype != np.float64:
                raise ValueError(f"its input normalisation is not two float64 arrays of shape ({d},)")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError("its input normalisation holds NaN, inf or a non-positive std")
        if arrays:
            raise ValueError(f"it has unexpected arrays {sorted(arrays)[:5]}")
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise ModelFileError(f"model file {path} does not describe a fastnet network: {str(exc)[:200]}") from None
    return net, mean, std, inputs


def parse_meta(meta_array) -> dict:
    """The JSON object held by a ``meta`` array (0-d unicode); ValueError for anything else."""
    if meta_array is None:
        raise ValueError("it has no meta description")
    if meta_array.shape != () or meta_array.dtype.kind != "U":
        raise ValueError(f"its meta description is a {meta_array.dtype} array of shape {meta_array.shape}, not a JSON text")
    try:
        meta = json.loads(str(meta_array))
    except RecursionError:
        raise ValueError("its meta description is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"its meta description is a JSON {type(meta).__name__}, not an object")
    return meta


def network_from_arrays(meta: dict, arrays: dict) -> Network:
    """Rebuild the network ``meta`` (see :func:`network_meta`) describes from ``arrays``.

    Takes (pops) the network's arrays out of ``arrays``, checking each one's shape, dtype and
    finiteness against ``meta``; anything wrong raises ValueError, KeyError or TypeError with
    the reason.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else meta!r:.60}, expected {FORMAT!r}")
    sizes, bn, dtype = meta.get("sizes"), meta.get("bn"), meta.get("dtype")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(type(m) is int and m >= 1 for m in sizes)):
        raise ValueError(f"its layer sizes {sizes!r:.60} are not a list of positive integers")
    if not isinstance(bn, bool) or dtype not in ("float32", "float64"):
        raise ValueError(f"bn {bn!r:.20} / dtype {dtype!r:.20} are not those of a fastnet network")
    dtype = np.dtype(dtype)
    eps, alpha, sigma = meta.get("eps"), meta.get("alpha"), meta.get("sigma")
    if not (_number(eps) and eps > 0 and _number(alpha) and 0 <= alpha < 1 and (sigma is None or _number(sigma))):
        raise ValueError(f"eps {eps!r:.20}, alpha {alpha!r:.20} or sigma {sigma!r:.20} is not a valid number")

    # Bonus architecture (absent from files written before it existed: the assignment's network).
    placement, skip = meta.get("bn_placement", "before"), meta.get("skip", False)
    if placement not in PLACEMENTS or not isinstance(skip, bool):
        raise ValueError(f"bn_placement {placement!r:.20} / skip {skip!r:.20} are not those of a fastnet network")
    try:
        check_architecture(sizes, bn, placement, skip)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None

    def take(name, shape):
        a = arrays.pop(name, None)
        if a is None:
            raise ValueError(f"it lacks {name}")
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} and {dtype}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or inf")
        if name.startswith("v_av") and (a < 0).any():  # a variance: eq (39) averages squares
            raise ValueError(f"{name} holds a negative running variance")
        return np.ascontiguousarray(a)

    layers = []
    k = len(sizes) - 1
    kinds = layer_kinds(k, bn, placement, skip) + ["output"]
    for l in range(1, k + 1):
        m_in, m_out = sizes[l - 1], sizes[l]
        kind = kinds[l - 1]
        layer = Layer(W=take(f"W{l}", (m_out, m_in)), b=take(f"b{l}", (m_out,)) if HAS_BIAS.get(kind, True) else None)
        if HAS_BN.get(kind, False):
            layer.gamma, layer.beta = take(f"gamma{l}", (m_out,)), take(f"beta{l}", (m_out,))
            if f"mu_av{l}" in arrays:
                layer.mu_av, layer.v_av = take(f"mu_av{l}", (m_out,)), take(f"v_av{l}", (m_out,))
        layers.append(layer)
    return Network(layers, bn=bn, eps=float(eps), alpha=float(alpha), init=str(meta.get("init", "he"))[:20], sigma=sigma,
                   bn_placement=placement, skip=skip)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
