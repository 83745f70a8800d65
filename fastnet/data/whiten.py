"""Input whitening computed on the training set (issue 17): per-image contrast normalisation,
PCA and ZCA whitening, fitted so that a horizontal flip commutes with them exactly.

The maths
---------
The input rows ``x`` (3072 values) are CIFAR-10 images (3 x 32 x 32, row-major) already
normalised per pixel (:mod:`fastnet.data.images`). In order:

1. ``contrast`` (optional), per image: ``x <- (x - mean(x)) / sqrt(var(x) + CONTRAST_EPS)``,
   mean and (biased) variance over the image's 3072 values. ``CONTRAST_EPS`` = 0.01, 1 % of a
   normalised pixel's variance: a flat image gives zeros instead of 0/0, and a row's standard
   deviation afterwards is ``sqrt(v / (v + 0.01))`` (0.993 for the median CIFAR-10 training
   image, v = 0.70; 0.91 for the flattest of the first 20,000, v = 0.048).
2. The flip ``P`` pairs pixel (c, r, j) with (c, r, 31 - j): 1536 pairs (a, b). In the
   orthonormal basis ``Q = [E | O]`` of pair sums and differences, ``e = (x_a + x_b) / sqrt 2``,
   ``o = (x_a - x_b) / sqrt 2``, a flip keeps ``e`` and negates ``o``. The mean ``m`` and the
   covariance ``C`` are those of the training rows *together with their flipped copies*
   (2n rows): then ``P m = m`` and ``P C P = C``, so in the basis Q the covariance is block
   diagonal, ``C_e`` (the training covariance of e) and ``C_o`` (the training second moment
   of o; o has mean 0 over the 2n rows); each 1536 x 1536 block is decomposed on its own,
   ``C_e = V_e diag(lambda_e) V_e^T`` (numpy's ``eigh``, eigenvalues below 0 from rounding
   set to 0, each eigenvector's largest entry made positive). The eigenvectors of C are
   ``E v`` (flip-even) and ``O v`` (flip-odd) by construction, not by luck of ``eigh``.
3. ``zca``: ``x_w = (x - m) U diag(1 / sqrt(lambda + eps)) U^T``, a symmetric 3072 x 3072
   matrix; the output is image-shaped. ``pca``: ``z = (x - m) U_d diag(1 / sqrt(lambda + eps))``
   for the d components of largest eigenvalue (``dims``; all 3072 if None), the even ones
   first, then the odd ones, each group by decreasing eigenvalue. ``eps`` regularises the
   small eigenvalues (a fully-connected network would otherwise be fed amplified noise). The
   eigenvalues of per-pixel normalised CIFAR-10 sum to 3072 (830 the largest, 0.16 the 512th);
   a run's default, eps = 10, was chosen on validation accuracy: [512, 256], 2 epochs, zca
   with eps 0.1 / 1 / 10 / 100 gave 45.2 / 49.7 / 53.9 / 54.0 % against 52.5 % unwhitened.

Over the 2n rows (training rows and their flips) the whitened rows have covariance exactly
``diag(lambda / (lambda + eps))`` for pca and ``U diag(lambda / (lambda + eps)) U^T`` for zca
(tests/data/test_whiten.py, float64, to 1e-9 absolute on synthetic data).

Flips commute with the whitening, bit for bit: the transform works in the pair basis (a
flip swaps ``x_a`` and ``x_b``; sums do not care about the order of two terms, differences
change sign, and a matrix product of negated rows is the negated product), and the
contrast's mean and variance are sums over pairs. So augmenting *whitened* rows is
augmenting the images: for zca (and contrast alone) :func:`fastnet.data.augment.augment_batch`
flips the image-shaped rows; for pca a flip is the sign change of the odd components
(:func:`flip_batch`, the flips the image augmentation would draw). Translations do not
commute (the zero padding, and the whitening filter is only nearly shift-invariant: a
translated whitened image equals the whitened translated image only away from the border),
so they are allowed for zca as an approximation and refused for pca, which has no image.

The whitening is a fixed transform of the input: it changes no gradient of the network,
whose gradient checks therefore hold as they are (no new check is needed).

Precision: the fit is float64 throughout (two passes: the mean, then the centred second
moments). The transform is float64 up to the pair coordinates, which are then rounded to the
run's dtype for the matrix product (float32: within 1e-4 of the largest whitened value of the
float64 transform, 6e-5 measured on synthetic data). Computed once per run, in blocks of :data:`BLOCK` rows; the same blocks at
evaluation give the same bits. Fit and transform use NumPy only.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fastnet.data.augment import IMAGE_SHAPE, augment_draws

FORMAT = "fastnet-whitening-1"
MODES = ("none", "pca", "zca")
CONTRAST_EPS = 0.01
BLOCK = 2048  # rows per block: 50 MB of float64
_C = 1.0 / math.sqrt(2.0)
PREFIX = "whiten."  # the names of its arrays in a model file


@lru_cache(maxsize=8)
def mirror_pairs(image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pixel pairs a horizontal flip swaps: (a, b), each (C*H*W/2,), a in the left half of
    every image row, b its mirror image (the width must be even: CIFAR-10's 32)."""
    C, H, W = image_shape
    if W % 2:
        raise ValueError(f"the mirror pairs need an even image width, got {W}")
    idx = np.arange(C * H * W).reshape(C, H, W)
    return idx[:, :, : W // 2].ravel(), idx[:, :, ::-1][:, :, : W // 2].ravel()


def flip_permutation(image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> NDArray[np.intp]:
    """``X[:, P]`` flips every image row of X horizontally."""
    C, H, W = image_shape
    return np.arange(C * H * W).reshape(C, H, W)[:, :, ::-1].ravel()


def pair_halves(Y: NDArray, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> tuple[NDArray, NDArray]:
    """Views of the rows of Y (n, C*H*W) as the left halves of the images and the mirrored
    right halves, (n, C, H, W/2) each: element (c, r, j) of the second is pixel (c, r, W-1-j),
    the pair order of :func:`mirror_pairs`. No copy (C-contiguous Y)."""
    C, H, W = image_shape
    Y4 = np.ascontiguousarray(Y).reshape(len(Y), C, H, W)
    return Y4[..., : W // 2], Y4[..., ::-1][..., : W // 2]


def _combine(op, L: NDArray, R: NDArray, dtype=np.float64) -> NDArray:
    """``op(L, R)`` into a new C-contiguous (n, D/2) array: its layout, and so the order of any
    sum over it, does not depend on which operand is the mirrored view."""
    out = np.empty(L.shape, dtype)
    op(L, R, out=out)
    return out.reshape(len(L), -1)


def contrast_normalise(X: NDArray[np.float64], eps: float = CONTRAST_EPS, image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> NDArray[np.float64]:
    """Each row minus its mean, divided by ``sqrt(its variance + eps)`` (float64, a new array).
    Mean and variance are sums over the mirror pairs, so the result of a flipped row is the
    flipped result bit for bit."""
    X = np.asarray(X, np.float64)
    d = X.shape[1]
    mu = _combine(np.add, *pair_halves(X, image_shape)).sum(axis=1) / d
    D = X - mu[:, None]
    L, R = pair_halves(D, image_shape)
    v = (_combine(np.multiply, L, L) + _combine(np.multiply, R, R)).sum(axis=1) / d
    D /= np.sqrt(v + eps)[:, None]
    return D


def wanted(contrast: bool, mode: str) -> bool:
    """Whether the settings ask for any input transform at all."""
    return bool(contrast) or mode != "none"


@dataclass(frozen=True, eq=False)
class Whitening:
    """A fitted input transform (module docstring): contrast normalisation and/or whitening.

    ``mean`` (D,), flip-symmetric; ``even`` (D/2, d_e) and ``odd`` (D/2, d_o): the whitening
    in the pair basis (pca: ``V[:, kept] / sqrt(lambda + eps)``; zca: the symmetric
    ``V diag(1 / sqrt(lambda + eps)) V^T`` of each block); ``eigenvalues``: those kept, even
    then odd. All float64; None for ``mode == "none"`` (contrast only). D = C*H*W of
    ``image_shape``, 3072 for CIFAR-10 (the tests also use smaller images)."""

    contrast: bool
    mode: str
    eps: float
    dims: int | None
    mean: NDArray[np.float64] | None = None
    even: NDArray[np.float64] | None = None
    odd: NDArray[np.float64] | None = None
    eigenvalues: NDArray[np.float64] | None = None
    contrast_eps: float = CONTRAST_EPS
    image_shape: tuple[int, int, int] = IMAGE_SHAPE

    @property
    def n_in(self) -> int:
        """The width of the rows it takes: C*H*W."""
        return int(np.prod(self.image_shape))

    @property
    def width(self) -> int:
        """The width of the whitened rows: the network's input."""
        return self.even.shape[1] + self.odd.shape[1] if self.mode == "pca" else self.n_in

    @property
    def image_shaped(self) -> bool:
        """Whether the output rows are images (so the image augmentation applies to them)."""
        return self.mode != "pca"

    @property
    def signs(self) -> NDArray[np.float64] | None:
        """pca: what a flip multiplies the components by (+1 even, -1 odd); None otherwise."""
        if self.mode != "pca":
            return None
        return np.concatenate([np.ones(self.even.shape[1]), -np.ones(self.odd.shape[1])])

    def settings(self) -> dict:
        """The settings, under the names of the configuration's fields."""
        return {"contrast": self.contrast, "whiten": self.mode, "whiten_eps": self.eps, "whiten_dims": self.dims}

    def describe(self) -> str:
        """E.g. 'contrast + zca (eps 0.1, 3072 values)'."""
        parts = (["contrast"] if self.contrast else []) + ([f"{self.mode} (eps {self.eps:g}, {self.width} values)"] if self.mode != "none" else [])
        return " + ".join(parts)

    def transform(self, X, dtype: DTypeLike | None = None, block: int = BLOCK) -> NDArray[np.floating]:
        """The rows of X (an (n, D) array or NormalisedImages, any float dtype) transformed,
        a new C-contiguous (n, width) array of ``dtype`` (default X's)."""
        dt = np.dtype(dtype if dtype is not None else X.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise ValueError(f"the whitening takes rows of {self.n_in} values ({'x'.join(map(str, self.image_shape))} images), got shape {X.shape}")
        n = X.shape[0]
        out = np.empty((n, self.width), dt)
        mats = (self.even.astype(dt), self.odd.astype(dt)) if self.mode != "none" else None
        for start in range(0, n, block):
            out[start:start + block] = self._block(np.asarray(X[start:start + block], np.float64), dt, mats)
        return out

    def _block(self, X: NDArray[np.float64], dt: np.dtype, mats) -> NDArray:
        """One block of rows, float64 in, ``dt`` out (see :meth:`transform`)."""
        if self.contrast:
            X = contrast_normalise(X, self.contrast_eps, self.image_shape)
        if self.mode == "none":
            return X.astype(dt)
        L, R = pair_halves(X - self.mean, self.image_shape)
        e = (_combine(np.add, L, R) * _C).astype(dt)  # a flip keeps e (a + b == b + a) ...
        o = (_combine(np.subtract, L, R) * _C).astype(dt)  # ... and negates o exactly
        ew, ow = e @ mats[0], o @ mats[1]
        if self.mode == "pca":
            return np.concatenate([ew, ow], axis=1)
        out = np.empty((len(X), self.n_in), dt)
        left, right = pair_halves(out, self.image_shape)  # views: writing them fills out
        c = dt.type(_C)
        left[...] = ((ew + ow) * c).reshape(left.shape)
        right[...] = ((ew - ow) * c).reshape(right.shape)
        return out

    def matrix(self) -> NDArray[np.float64]:
        """The whitening as one (D, width) matrix W in image coordinates: the transform is
        ``(x - mean) @ W`` (after the contrast normalisation, if on). For zca W is symmetric."""
        if self.mode == "none":
            raise ValueError("a contrast normalisation alone has no matrix")
        A, B = mirror_pairs(self.image_shape)
        d_e = self.even.shape[1]
        W = np.zeros((self.n_in, self.width))
        if self.mode == "pca":
            W[A, :d_e], W[B, :d_e] = self.even * _C, self.even * _C
            W[A, d_e:], W[B, d_e:] = self.odd * _C, -self.odd * _C
            return W
        s, d = (self.even + self.odd) / 2, (self.even - self.odd) / 2
        W[np.ix_(A, A)], W[np.ix_(B, B)], W[np.ix_(A, B)], W[np.ix_(B, A)] = s, s, d, d
        return W

    def to_arrays(self) -> dict[str, NDArray]:
        """The whitening as plain arrays named ``whiten.*`` (a model file's members, no pickles)."""
        meta = {"format": FORMAT, **self.settings(), "contrast_eps": self.contrast_eps, "image_shape": list(self.image_shape)}
        arrays = {PREFIX + "meta": np.array(json.dumps(meta))}
        if self.mode != "none":
            arrays.update({PREFIX + k: getattr(self, k) for k in ("mean", "even", "odd", "eigenvalues")})
        return arrays

    def sha256(self) -> str:
        """A hash of every stored value (to check that a resumed run uses the same whitening)."""
        h = hashlib.sha256()
        for name, a in sorted(self.to_arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


ARRAY_NAMES = tuple(PREFIX + k for k in ("meta", "mean", "even", "odd", "eigenvalues"))


def from_arrays(arrays: dict[str, NDArray]) -> Whitening:
    """The Whitening stored as :meth:`Whitening.to_arrays`; ValueError naming what is wrong."""
    extra = sorted(set(arrays) - set(ARRAY_NAMES))
    if extra:
        raise ValueError(f"its whitening has unexpected arrays {extra[:5]}")
    meta = _meta(arrays.get(PREFIX + "meta"))
    contrast, mode, eps, dims, ceps = (meta.get(k) for k in ("contrast", "whiten", "whiten_eps", "whiten_dims", "contrast_eps"))
    shape = meta.get("image_shape", list(IMAGE_SHAPE))
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(k) is int and 1 <= k <= 4096 for k in shape) and shape[2] % 2 == 0):
        raise ValueError(f"its whitening's image shape {shape!r:.40} is not that of images of even width")
    shape = tuple(shape)
    n_in = int(np.prod(shape))
    if not isinstance(contrast, bool) or mode not in MODES or not wanted(contrast, mode):
        raise ValueError(f"its whitening settings contrast {contrast!r:.20} / whiten {mode!r:.20} are not valid")
    if not (_positive(eps) and _positive(ceps) and (dims is None or (type(dims) is int and 1 <= dims <= n_in))):
        raise ValueError(f"its whitening settings eps {eps!r:.20} / dims {dims!r:.20} / contrast_eps {ceps!r:.20} are not valid")
    if mode == "none":
        if len(arrays) != 1:
            raise ValueError("its contrast normalisation holds arrays it has no use for")
        return Whitening(contrast, mode, float(eps), dims, contrast_eps=float(ceps), image_shape=shape)
    got = [arrays.get(PREFIX + k) for k in ("mean", "even", "odd", "eigenvalues")]
    if any(a is None or a.dtype != np.float64 or not np.isfinite(a).all() for a in got):
        raise ValueError("its whitening lacks an array or holds one that is not finite float64")
    mean, even, odd, lam = got
    half = n_in // 2
    if mean.shape != (n_in,) or even.ndim != 2 or odd.ndim != 2 or even.shape[0] != half or odd.shape[0] != half:
        raise ValueError(f"its whitening arrays have shapes {mean.shape}, {even.shape}, {odd.shape}, not those of a whitening of {n_in} values")
    width = even.shape[1] + odd.shape[1]
    if lam.shape != (width,) or (lam < 0).any() or (mode == "zca" and even.shape[1] != half) or (mode == "pca" and width != (dims or n_in)):
        raise ValueError(f"its whitening keeps {width} components, which does not match its settings ({mode}, dims {dims})")
    if not np.array_equal(mean, mean[flip_permutation(shape)]):
        raise ValueError("its whitening mean is not flip-symmetric")
    return Whitening(contrast, mode, float(eps), dims, *(np.ascontiguousarray(a) for a in got), contrast_eps=float(ceps), image_shape=shape)


def _meta(meta_array) -> dict:
    if meta_array is None or meta_array.shape != () or meta_array.dtype.kind != "U":
        raise ValueError("its whitening has no JSON description")
    try:
        meta = json.loads(str(meta_array))
    except (ValueError, RecursionError):
        raise ValueError("its whitening description is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"its whitening is not of the format {FORMAT!r}")
    return meta


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


# ----------------------------------------------------------------------------------- the fit

def fit_whitening(X, *, contrast: bool = False, mode: str = "zca", eps: float = 10.0, dims: int | None = None,
                  image_shape: tuple[int, int, int] = IMAGE_SHAPE, block: int = BLOCK) -> Whitening:
    """The whitening of the rows of X (the training set: an (n, D) float array or
    NormalisedImages), fitted as the module docstring says; deterministic for one BLAS
    thread count (the order of the sums is fixed by ``block``)."""
    if mode not in MODES:
        raise ValueError(f"unknown whitening {mode!r}; choose one of {', '.join(MODES)}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"the whitening's eps must be positive, got {eps}")
    n_in = int(np.prod(image_shape))
    if mode == "none":
        return Whitening(bool(contrast), mode, float(eps), dims, image_shape=image_shape)
    n = X.shape[0]
    if n < 2 or X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f"the whitening is fitted on at least 2 rows of {n_in} values, got shape {X.shape}")
    if dims is not None and not (mode == "pca" and 1 <= dims <= n_in):
        raise ValueError(f"dims keeps 1..{n_in} PCA components; got {dims} for {mode}")
    rows = _row_reader(X, contrast, image_shape, block)
    total = np.zeros(n_in)
    for rows_ in rows():  # pass 1: the mean (then symmetrised: that of the 2n rows)
        total += rows_.sum(axis=0)
    m = total / n
    mean = (m + m[flip_permutation(image_shape)]) / 2  # bitwise symmetric: a + b == b + a
    S_e, S_o = np.zeros((n_in // 2, n_in // 2)), np.zeros((n_in // 2, n_in // 2))
    for rows_ in rows():  # pass 2: centred second moments in the pair basis
        L, R = pair_halves(rows_ - mean, image_shape)
        e, o = _combine(np.add, L, R) * _C, _combine(np.subtract, L, R) * _C
        S_e += e.T @ e  # numpy runs A.T @ A as a symmetric rank-k update: half a product
        S_o += o.T @ o
    (lam_e, V_e), (lam_o, V_o) = _eig(S_e / n), _eig(S_o / n)
    kw = {"contrast_eps": CONTRAST_EPS, "image_shape": tuple(image_shape)}
    if mode == "zca":
        return Whitening(bool(contrast), mode, float(eps), None, mean, _zca(V_e, lam_e, eps), _zca(V_o, lam_o, eps),
                         np.concatenate([lam_e, lam_o]), **kw)
    half = n_in // 2
    order = np.argsort(-np.concatenate([lam_e, lam_o]), kind="stable")[: dims or n_in]  # ties: even first
    ke, ko = np.sort(order[order < half]), np.sort(order[order >= half]) - half
    even = np.ascontiguousarray(V_e[:, ke] / np.sqrt(lam_e[ke] + eps))
    odd = np.ascontiguousarray(V_o[:, ko] / np.sqrt(lam_o[ko] + eps))
    return Whitening(bool(contrast), mode, float(eps), dims, mean, even, odd, np.concatenate([lam_e[ke], lam_o[ko]]), **kw)


def _row_reader(X, contrast: bool, image_shape, block: int):
    """A function giving the blocks of rows of X in order, float64, contrast-normalised if asked."""
    def blocks():
        for start in range(0, X.shape[0], block):
            R = np.asarray(X[start:start + block], np.float64)
            yield contrast_normalise(R, CONTRAST_EPS, image_shape) if contrast else R
    return blocks


def _eig(C: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Eigenvalues (decreasing, rounding's negatives set to 0) and eigenvectors (columns,
    each with its largest entry positive) of the symmetric C."""
    lam, V = np.linalg.eigh((C + C.T) / 2)
    lam, V = np.maximum(lam[::-1], 0.0), V[:, ::-1]
    big = np.abs(V).argmax(axis=0)
    V = V * np.where(V[big, np.arange(V.shape[1])] < 0, -1.0, 1.0)
    return lam, np.ascontiguousarray(V)


def _zca(V: NDArray[np.float64], lam: NDArray[np.float64], eps: float) -> NDArray[np.float64]:
    """``V diag(1 / sqrt(lam + eps)) V^T``, made exactly symmetric."""
    A = (V / np.sqrt(lam + eps)) @ V.T
    return (A + A.T) / 2


# ------------------------------------------------------------------ augmentation, data sets

def flip_batch(Z: NDArray, signs: NDArray, rng: np.random.Generator) -> NDArray:
    """PCA-whitened rows Z randomly flipped: each row, with probability 1/2, times ``signs``
    (the odd components negated). The draws are those of
    :func:`fastnet.data.augment.augment_batch` with no translation, so this is exactly the
    PCA of the images that augmentation would flip."""
    _, _, flipped = augment_draws(rng, Z.shape[0], 0, True)
    out = np.array(Z, order="C", copy=True)
    out[flipped] *= signs.astype(out.dtype)
    return out


def whiten_dataset(data, w: Whitening, dtype: DTypeLike | None = None) -> Any:
    """A copy of the Dataset ``data`` whose training, validation and test rows are ``w``'s
    transform of its rows (float arrays of ``dtype``, default that of its rows), and
    ``whitening = w``; the per-pixel ``mean`` and ``std`` are kept."""
    dt = np.dtype(dtype if dtype is not None else data.X_train.dtype)
    return replace(data, X_train=w.transform(data.X_train, dt), X_val=w.transform(data.X_val, dt),
                   X_test=w.transform(data.X_test, dt), whitening=w)
