"""Data augmentation on the fly: random horizontal flips and small translations (bonus).

Works on the normalised rows the network trains on, (n, 3072), viewed as (n, 3, 32, 32)
images (CIFAR-10's layout: 1024 red, then green, then blue values, each 32 x 32 row-major).
A translation by (dy, dx) with |dy|, |dx| <= ``shift`` pads the image with zeros -- zero is the
training mean of every normalised pixel, so the uncovered border is the "average" pixel -- and
crops it back to 32 x 32; a flip mirrors the columns. Each image gets its own draw.

The work is vectorised per batch: one padded copy of the batch, then one slice copy per
distinct translation present (at most (2 shift + 1)^2 = 49 for shift 3, whatever the batch
size), then one mirrored copy of the flipped rows. About 0.8 ms for a batch of 100 rows.
:func:`augment_batch` is also the reference of the compiled form: the fused step's gather
moves each row as it copies it (``gather_moved_rows`` of both kernels, given
:func:`augment_moves`), ~0.2 ms for 100 rows on a core the step leaves free, and equal to it
bit for bit (tests/training/test_augmented_gather.py).

Random numbers come from the generator passed in; :func:`fastnet.training.loop.fit` makes it from
the run's seed and the update step, so an augmented run is reproducible and resumes exactly.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import ConfigError

IMAGE_SHAPE = (3, 32, 32)
MAX_SHIFT = 8
#: Test-time augmentation (issue 17): the views of each test image whose predictions are averaged.
TTA_MODES = ("none", "flip", "flip-shift")


def augment_batch(X: NDArray, rng: np.random.Generator, shift: int = 3, flip: bool = True,
                  image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> NDArray:
    """A randomly flipped and translated copy of the images in the rows of X.

    Parameters
    ----------
    X : (n, C*H*W) float array, one normalised image per row; not modified.
    rng : the generator to draw from (per image: dy, dx uniform in -shift..shift, flip with
        probability 1/2).
    shift : largest translation in pixels (0: none).
    flip : whether to flip horizontally at random.

    Returns
    -------
    (n, C*H*W) C-contiguous array of X's dtype.
    """
    C, H, W = image_shape
    n = X.shape[0]
    if X.ndim != 2 or X.shape[1] != C * H * W:
        raise ConfigError(f"augmentation needs rows of {C}x{H}x{W} = {C * H * W} values (CIFAR-10 images), got shape {X.shape}")
    if not 0 <= shift <= MAX_SHIFT:
        raise ConfigError(f"the augmentation shift must be 0..{MAX_SHIFT} pixels, got {shift}")
    imgs = X.reshape(n, C, H, W)
    dy, dx, flipped = augment_draws(rng, n, shift, flip)
    if shift:
        padded = np.zeros((n, C, H + 2 * shift, W + 2 * shift), X.dtype)
        padded[:, :, shift : shift + H, shift : shift + W] = imgs
        out = np.empty((n, C, H, W), X.dtype)
        code = dy * (2 * shift + 1) + dx
        order = np.argsort(code, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(code[order])) + 1):
            a, b = dy[group[0]], dx[group[0]]
            out[group] = padded[group, :, a : a + H, b : b + W]
    else:
        out = imgs.copy()
    if flipped.any():
        out[flipped] = out[flipped][:, :, :, ::-1]
    return out.reshape(n, C * H * W)


def augment_draws(rng: np.random.Generator, n: int, shift: int, flip: bool) -> tuple[NDArray, NDArray, NDArray]:
    """The random draws of :func:`augment_batch` for n images, in its order: offsets dy, dx
    into the padded image (``shift`` = no move) and which images are flipped. PCA-whitened
    rows are flipped with the same draws (:func:`fastnet.data.whiten.flip_batch`)."""
    dy = rng.integers(0, 2 * shift + 1, n)
    dx = rng.integers(0, 2 * shift + 1, n)
    flipped = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    return dy, dx, flipped


def augment_moves(rng: np.random.Generator, n: int, shift: int, flip: bool = True) -> NDArray[np.int64]:
    """The draws of :func:`augment_batch` for n images as the compiled gathers take them
    (``gather_moved_rows``, :mod:`fastnet.training.fused`): an (n, 3) int64 array of rows
    (oy, ox, flipped), the translation as the offset of the source pixel (-shift..shift) and
    1 where the image is mirrored. Row i of the augmented batch is then, at (c, h, w), the
    source pixel (c, h + oy, w' + ox) with w' = W - 1 - w if flipped else w, and 0 where that
    lies outside the image: exactly :func:`augment_batch` with a generator in the same state."""
    dy, dx, flipped = augment_draws(rng, n, shift, flip)
    return np.stack([dy - shift, dx - shift, flipped.astype(np.int64)], axis=1)  # (the offsets are int64 draws)


def augmented_copies(X: NDArray, copies: int, rng: np.random.Generator, shift: int = 3, flip: bool = True) -> NDArray:
    """X followed by ``copies`` augmented copies of it, (n (1 + copies), d) (adaptive BN's pool)."""
    return np.concatenate([X] + [augment_batch(X, rng, shift, flip) for _ in range(copies)])


def flipped(X: NDArray, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> NDArray:
    """The mirror images of the rows of X (columns reversed), C-contiguous."""
    n = X.shape[0]
    return np.ascontiguousarray(X.reshape(n, *image_shape)[..., ::-1]).reshape(n, -1)


def shifted(X: NDArray, dy: int, dx: int, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> NDArray:
    """The rows of X moved by (dy, dx) pixels (down, right), the uncovered border zero -- the
    translation of :func:`augment_batch`, the same for every row."""
    C, H, W = image_shape
    n = X.shape[0]
    imgs = X.reshape(n, C, H, W)
    out = np.zeros_like(imgs)
    out[:, :, max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = imgs[:, :, max(-dy, 0) : H - max(dy, 0), max(-dx, 0) : W - max(dx, 0)]
    return out.reshape(n, C * H * W)


def tta_views(mode: str):
    """Test-time augmentation: ``views(X)``, the list of versions of the rows X whose predicted
    probabilities are averaged, or None for ``mode`` "none".

    "flip": each image and its mirror image (2 views). "flip-shift": those and, each with its
    mirror image, the image moved by one pixel up, down, left and right (10 views). One pixel,
    whatever the training shift: measured on the best-mlp preset (2-px training shifts), the
    four one-pixel moves add ~0.3 points to the flip's ~0.6.
    """
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}")
    if mode == "none":
        return None
    moves = ((1, 0), (-1, 0), (0, 1), (0, -1)) if mode == "flip-shift" else ()

    def views(X: NDArray) -> list[NDArray]:
        if X.ndim != 2 or X.shape[1] != int(np.prod(IMAGE_SHAPE)):
            raise ConfigError(f"test-time augmentation needs image rows of {int(np.prod(IMAGE_SHAPE))} values, got shape {X.shape}")
        out = [X, flipped(X)]
        for dy, dx in moves:
            moved = shifted(X, dy, dx)
            out += [moved, flipped(moved)]
        return out

    return views
