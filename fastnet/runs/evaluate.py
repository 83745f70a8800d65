"""A finished run measured again: its model on the test set (``fastnet evaluate``), and with
adaptive BN, population statistics estimated on the test images themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fastnet.backends import resolve
from fastnet.data.augment import augmented_copies, tta_views
from fastnet.data.batches import N_CLASSES, load_batch
from fastnet.data.fetch import find_cifar10
from fastnet.errors import FastnetError
from fastnet.model.bn_stats import Stats, precise_stats, using_stats
from fastnet.model.files import ModelFileError, load_model
from fastnet.model.network import Network, evaluate
from fastnet.util.files import read_json


def evaluate_run(run_dir, data_dir=None, backend=None) -> dict:
    """``fastnet evaluate RUN_DIR``: reload a run's model and measure it on the CIFAR-10 test
    batch, beside the test accuracy the run recorded (with the run's test-time augmentation)."""
    net, X, y, ops, config = load_run_for_test(run_dir, data_dir, backend)
    m = evaluate(net, X, y, 0.0, ops, views=run_views(config))
    metrics = Path(run_dir) / "metrics.json"
    recorded = read_json(metrics).get("test_accuracy") if metrics.exists() else None
    recorded = recorded if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) else None
    return {"test_accuracy": m.accuracy, "n_test": int(len(y)), "recorded_test_accuracy": recorded}


def run_views(config: dict):
    """The test-time augmentation (issue 17) a run's config.json asks for, as its own test
    evaluation used it: :func:`fastnet.data.augment.tta_views` of its ``tta``."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    tta = train.get("tta", "none")
    return tta_views(tta if isinstance(tta, str) else repr(tta))


def adaptive_stats(net: Network, X: NDArray, batch: int, ops, *, images: int | None = None, copies: int = 0,
                   shift: int = 3, seed: int = 0) -> tuple[Stats, int]:
    """Adaptive BN: population statistics estimated on the (test) inputs X themselves.

    images : use only this many rows of X, drawn at random (a small test set); None: all.
    copies : add this many flipped and translated copies of those rows (``shift`` pixels at
        most) to the pool, as the assignment suggests for small test sets.
    The pool is shuffled before it is cut into batches of ``batch`` rows, so no batch holds
    only copies of one image. Returns (stats, number of distinct images used).
    """
    rng = np.random.default_rng([seed, 5])
    idx = rng.permutation(X.shape[0])[: images if images is not None else X.shape[0]]
    pool = augmented_copies(X[idx], copies, rng, shift) if copies else X[idx]
    pool = pool[rng.permutation(pool.shape[0])]
    return precise_stats(net, pool, batch, ops), len(idx)


def load_run_for_test(run_dir, data_dir=None, backend=None):
    """A finished run's network, its normalised test set and ops: (net, X_test, y_test, ops, config).

    The data come from ``data_dir``, else from where the run loaded them (config.json); the
    backend is ``backend``, else the run's own."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.npz").exists():
        raise FastnetError(f"{run_dir} is not a finished fastnet run (no model.npz)")
    net, mean, std, whitening = load_model_inputs(run_dir / "model.npz")
    if mean is None:
        raise FastnetError(f"{run_dir / 'model.npz'} holds no input normalisation; it was not written by fastnet-train")
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    if data_dir is None:
        source = config.get("data", {}).get("source") if isinstance(config.get("data"), dict) else None
        data_dir = source if isinstance(source, str) else None
    X, y = load_batch(find_cifar10(data_dir) / "test_batch")
    n_in = whitening.n_in if whitening is not None else net.sizes[0]
    if n_in != X.shape[1] or mean.shape != (X.shape[1],) or net.sizes[-1] != N_CLASSES:  # the data are CIFAR-10: 10 classes exactly
        raise FastnetError(f"{run_dir / 'model.npz'} is a network for {n_in} inputs and {net.sizes[-1]} classes, not for CIFAR-10's {X.shape[1]} and 10; it belongs to another task")
    Xn = pixel_inputs(X, mean, std, net.dtype, whitening)
    name = backend or config.get("backend")
    try:
        ops = resolve(name if isinstance(name, str) else None).ops
    except ValueError as exc:
        raise FastnetError(f"{run_dir / 'config.json'}: {exc}") from None
    return net, Xn, y, ops, config


def load_model_inputs(path):
    """A model file's (network, per-pixel mean, std, whitening or None): its input whitening
    (issue 17) rebuilt and checked against the network; ModelFileError naming the file else."""
    from fastnet.data.whiten import from_arrays

    net, mean, std, inputs = load_model(path)
    if not inputs:
        return net, mean, std, None
    try:
        whitening = from_arrays(inputs)
    except ValueError as exc:
        raise ModelFileError(f"model file {path} does not describe a fastnet network: {str(exc)[:200]}") from None
    if whitening.width != net.sizes[0] or mean is None:
        raise ModelFileError(f"model file {path} holds a whitening to {whitening.width} values for a network of {net.sizes[0]} inputs"
                             f"{' and no per-pixel normalisation' if mean is None else ''}; it was damaged or edited")
    return net, mean, std, whitening


def pixel_inputs(U: NDArray[np.uint8], mean: NDArray, std: NDArray, dtype, whitening=None) -> NDArray:
    """uint8 pixel rows as a run's network takes them: normalised by the training mean and std,
    then, for a whitened run, through the arithmetic that made its training rows (the run's
    own test rows bit for bit: :class:`NormalisedImages`, then the whitening's transform)."""
    if whitening is None:
        return np.ascontiguousarray(((U - mean) / std).astype(dtype))
    from fastnet.data.images import NormalisedImages

    return whitening.transform(NormalisedImages(np.ascontiguousarray(U), mean, std, dtype), dtype)


def evaluate_adaptive(run_dir, data_dir=None, backend=None, images: int | None = None, copies: int = 0, seed: int = 0) -> dict:
    """``fastnet evaluate RUN_DIR --adaptive-bn``: test accuracy with the run's stored BN
    statistics and with adaptive BN (statistics of the test images; the model file is not
    changed). Batches of the run's own batch size; both with the run's test-time augmentation."""

    net, X, y, ops, config = load_run_for_test(run_dir, data_dir, backend)
    if not net.bn:
        raise FastnetError(f"{run_dir} is a network without batch norm; adaptive BN has nothing to re-estimate")
    if images is not None and images > X.shape[0]:
        raise FastnetError(f"--adaptive-images {images} is more than the {X.shape[0]} test images")
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    if copies and train.get("whiten") == "pca":  # issue 17: no image to translate
        raise FastnetError(f"{run_dir} feeds its network PCA components, not images, so there is nothing to flip and translate; drop --augment")
    batch = train.get("batch", 100)
    batch = batch if isinstance(batch, int) and batch >= 2 else 100
    views = run_views(config)
    stored = evaluate(net, X, y, 0.0, ops, views=views)
    stats, used = adaptive_stats(net, X, batch, ops, images=images, copies=copies, seed=seed)
    with using_stats(net, stats):
        adapted = evaluate(net, X, y, 0.0, ops, views=views)
    return {"test_accuracy": stored.accuracy, "adaptive_test_accuracy": adapted.accuracy, "test_loss": stored.loss,
            "adaptive_test_loss": adapted.loss, "n_test": int(len(y)), "stats_images": used, "copies": copies, "batch": batch}
