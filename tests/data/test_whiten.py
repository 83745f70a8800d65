"""Input whitening (fastnet.data.whiten, issue 17): its maths on small synthetic images, and
on a few hundred real CIFAR-10 images.

Tolerances (float64): the covariance of whitened rows is held to 1e-9 absolute -- the
eigendecomposition's residual (about 1e-15 of the covariance's norm, here ~1e2) divided by
eps = 0.1, with room; the matrix form equals the transform to 1e-10. Flips are compared
bit for bit (``array_equal``): the transform works in the basis of mirror-pair sums and
differences, where a flip keeps or negates numbers exactly (the module docstring). float32
transforms are within 1e-4 of the largest value of the float64 transform.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastnet.data.augment import augment_batch
from fastnet.data.images import NormalisedImages, pixel_stats
from fastnet.data.whiten import (
    CONTRAST_EPS,
    contrast_normalise,
    fit_whitening,
    flip_batch,
    flip_permutation,
    from_arrays,
    mirror_pairs,
)

SHAPE = (3, 8, 8)  # small images: the maths of 3 x 32 x 32 at 1/16 of the width
D = 192
EPS = 0.1


def images(n: int = 400, seed: int = 0) -> np.ndarray:
    """Correlated rows: 30 random 'patterns' plus noise and an offset, like normalised pixels
    of differing scales (not flip-symmetric: the fit symmetrises them)."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((30, D)) * rng.uniform(0.2, 3.0, (30, 1))
    return rng.standard_normal((n, 30)) @ M + 0.3 * rng.standard_normal((n, D)) + rng.standard_normal(D)


@pytest.fixture(scope="module")
def X():
    return images()


def fit(X, **kw):
    return fit_whitening(X, image_shape=SHAPE, eps=EPS, **kw)


def union_cov(Z: np.ndarray, Zf: np.ndarray) -> np.ndarray:
    """The (biased) covariance of rows Z together with their flips Zf."""
    U = np.concatenate([Z, Zf])
    U = U - U.mean(axis=0)
    return U.T @ U / len(U)


def test_mirror_pairs_are_the_flip():
    A, B = mirror_pairs(SHAPE)
    P = flip_permutation(SHAPE)
    assert len(A) == len(B) == D // 2 and len(set(A) | set(B)) == D
    assert (P[A] == B).all() and (P[B] == A).all()
    x = np.arange(D, dtype=float)
    assert (x[P].reshape(SHAPE) == x.reshape(SHAPE)[:, :, ::-1]).all()


@pytest.mark.parametrize("contrast", [False, True])
def test_pca_rows_have_covariance_lambda_over_lambda_plus_eps(X, contrast):
    """Over the training rows and their mirror images (the set the whitening is fitted on):
    diag(lambda / (lambda + eps)); the even block already over the training rows alone."""
    w = fit(X, contrast=contrast, mode="pca")
    Z, Zf = w.transform(X, np.float64), w.transform(X[:, flip_permutation(SHAPE)], np.float64)
    lam = w.eigenvalues
    assert Z.shape == (len(X), D) and (lam >= 0).all()
    np.testing.assert_allclose(union_cov(Z, Zf), np.diag(lam / (lam + EPS)), rtol=0, atol=1e-9)
    d_e = w.even.shape[1]
    E = Z[:, :d_e] - Z[:, :d_e].mean(axis=0)
    np.testing.assert_allclose(E.T @ E / len(E), np.diag(lam[:d_e] / (lam[:d_e] + EPS)), rtol=0, atol=1e-9)


def test_pca_keeps_the_components_of_largest_eigenvalue(X):
    full, top = fit(X, mode="pca"), fit(X, mode="pca", dims=20)
    assert top.width == 20 and top.signs.shape == (20,)
    assert np.sort(top.eigenvalues)[::-1] == pytest.approx(np.sort(full.eigenvalues)[::-1][:20], rel=0, abs=0)
    kept = fit(X, mode="pca", dims=20).transform(X, np.float64)
    Z = full.transform(X, np.float64)
    # the same components (even ones first, then odd): columns of the full transform
    cols = [np.flatnonzero(np.all(np.isclose(Z, kept[:, [j]], atol=1e-12), axis=0)) for j in range(20)]
    assert all(len(c) == 1 for c in cols)


def test_zca_is_image_shaped_symmetric_and_whitens(X):
    w = fit(X, mode="zca")
    Z = w.transform(X, np.float64)
    assert Z.shape == X.shape and w.width == D and w.image_shaped and w.signs is None
    W = w.matrix()
    assert W.shape == (D, D) and np.array_equal(W, W.T)
    np.testing.assert_allclose((X - w.mean) @ W, Z, rtol=0, atol=1e-10)
    P = flip_permutation(SHAPE)
    C = union_cov(X, X[:, P])
    lam = w.eigenvalues
    # W C W = U diag(lambda / (lambda + eps)) U^T: its eigenvalues are lambda / (lambda + eps)
    np.testing.assert_allclose(union_cov(Z, Z[:, P]), W @ C @ W, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(W @ C @ W)), np.sort(lam / (lam + EPS)), rtol=0, atol=1e-9)
    assert np.array_equal(w.mean, w.mean[P])


@pytest.mark.parametrize(("mode", "contrast"), [("zca", False), ("zca", True), ("none", True)])  # none without contrast: no transform
def test_a_flip_commutes_with_image_shaped_whitening_exactly(X, mode, contrast):
    w = fit(X, contrast=contrast, mode=mode)
    P = flip_permutation(SHAPE)
    assert np.array_equal(w.transform(X[:, P], np.float64), w.transform(X, np.float64)[:, P])


@pytest.mark.parametrize("dims", [None, 25])
@pytest.mark.parametrize("contrast", [False, True])
def test_a_flip_in_pca_space_is_the_sign_change_of_the_odd_components_exactly(X, dims, contrast):
    """PCA of the flipped images == PCA of the images times the signs (+1 even, -1 odd),
    bit for bit in float64; every eigenvector is exactly flip-even or flip-odd."""
    w = fit(X, contrast=contrast, mode="pca", dims=dims)
    P = flip_permutation(SHAPE)
    assert np.array_equal(w.transform(X[:, P], np.float64), w.transform(X, np.float64) * w.signs)
    U = w.matrix()
    assert np.array_equal(U[P], U * w.signs)
    assert np.array_equal(w.transform(X[:, P], np.float32), w.transform(X, np.float32) * w.signs.astype(np.float32))


def test_pca_flip_augmentation_is_pca_of_the_image_augmentation():
    """flip_batch draws what augment_batch (no translation) draws: the same images flip."""
    X = images(64)
    w = fit(X, mode="pca", dims=40)
    for seed in range(3):
        flipped_images = augment_batch(X, np.random.default_rng([seed, 3, 7]), shift=0, image_shape=SHAPE)
        expected = w.transform(flipped_images, np.float64)
        got = flip_batch(w.transform(X, np.float64), w.signs, np.random.default_rng([seed, 3, 7]))
        assert np.array_equal(got, expected)


def test_contrast_rows_have_mean_zero_and_std_from_their_variance(X):
    v = X.var(axis=1)
    Y = contrast_normalise(X, CONTRAST_EPS, SHAPE)
    np.testing.assert_allclose(Y.mean(axis=1), 0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(Y.std(axis=1), np.sqrt(v / (v + CONTRAST_EPS)), rtol=1e-12)
    assert (Y.std(axis=1)[v >= 1] > 0.995).all()
    flat = np.full((2, D), 3.0)
    assert np.array_equal(contrast_normalise(flat, CONTRAST_EPS, SHAPE), np.zeros((2, D)))  # no 0 / 0
    w = fit(X, contrast=True, mode="none")
    assert np.array_equal(w.transform(X, np.float64), Y)


@pytest.mark.parametrize("mode, dims", [("zca", None), ("pca", None), ("pca", 30), ("none", None)])
def test_the_arrays_round_trip_to_the_same_transform(X, mode, dims):
    w = fit(X, contrast=True, mode=mode, dims=dims)
    back = from_arrays({k: a.copy() for k, a in w.to_arrays().items()})
    assert back.settings() == w.settings() == {"contrast": True, "whiten": mode, "whiten_eps": EPS, "whiten_dims": dims}
    assert back.sha256() == w.sha256() and back.image_shape == SHAPE
    assert np.array_equal(back.transform(X, np.float32), w.transform(X, np.float32))


def test_the_fit_and_the_transform_are_deterministic(X):
    """Same rows, same blocks: same bits (other blocks may round differently, by BLAS's
    kernels for other shapes: within 1e-12 of the largest value)."""
    a, b = fit(X, mode="zca"), fit(X, mode="zca")
    assert a.sha256() == b.sha256()
    Z = a.transform(X, np.float64)
    assert np.array_equal(b.transform(X, np.float64), Z)
    assert np.abs(a.transform(X, np.float64, block=7) - Z).max() <= 1e-12 * np.abs(Z).max()


def test_float32_transform_is_close_to_float64(X):
    w = fit(X, mode="zca")
    Z64, Z32 = w.transform(X, np.float64), w.transform(X.astype(np.float32), np.float32)
    assert Z32.dtype == np.float32 and Z32.flags.c_contiguous
    assert np.abs(Z32 - Z64).max() <= 1e-4 * np.abs(Z64).max()


@pytest.mark.parametrize("damage, says", [
    (lambda a: a.pop("whiten.odd"), "lacks an array"),
    (lambda a: a.update({"whiten.mean": a["whiten.mean"] + np.arange(D) * 1e-3}), "not flip-symmetric"),
    (lambda a: a.update({"whiten.even": a["whiten.even"][:, :3]}), "does not match its settings"),
    (lambda a: a.update({"whiten.meta": np.array('{"format": "x"}')}), "format"),
    (lambda a: a.update({"whiten.extra": np.zeros(1)}), "unexpected arrays"),
    (lambda a: a.update({"whiten.eigenvalues": -a["whiten.eigenvalues"]}), "does not match its settings"),
])
def test_damaged_arrays_are_refused_with_a_reason(X, damage, says):
    arrays = fit(X, mode="pca", dims=30).to_arrays()
    damage(arrays)
    with pytest.raises(ValueError, match=says):
        from_arrays(arrays)


def test_bad_fit_arguments_are_refused(X):
    with pytest.raises(ValueError, match="unknown whitening"):
        fit_whitening(X, mode="pcaa", image_shape=SHAPE)
    with pytest.raises(ValueError, match="eps must be positive"):
        fit_whitening(X, mode="zca", eps=0.0, image_shape=SHAPE)
    with pytest.raises(ValueError, match="dims keeps"):
        fit_whitening(X, mode="zca", dims=10, image_shape=SHAPE)
    with pytest.raises(ValueError, match="takes rows of 192"):
        fit(X, mode="zca").transform(X[:, :100])


# ------------------------------------------------------------------------ real images

@pytest.fixture(scope="module")
def real_rows(real_cifar_dir):
    """300 real training images normalised per pixel by their own statistics, as
    NormalisedImages (the rows a run's whitening is fitted on)."""
    from fastnet.data.batches import read_batch

    U, _ = read_batch(real_cifar_dir / "cifar-10-batches-py" / "data_batch_1")
    U = np.ascontiguousarray(U[:300])
    mean, std = pixel_stats([U], len(U))
    return NormalisedImages(U, mean, std, np.float64)


@pytest.mark.data
@pytest.mark.slow
def test_real_images_flip_exactly_through_pca_and_zca(real_rows):
    X = real_rows[:]
    P = flip_permutation()
    pca = fit_whitening(real_rows, contrast=True, mode="pca", dims=128, eps=EPS)
    assert np.array_equal(pca.transform(X[:, P], np.float64), pca.transform(real_rows, np.float64) * pca.signs)
    zca = fit_whitening(real_rows, mode="zca", eps=EPS)
    Z = zca.transform(real_rows, np.float64)
    assert np.array_equal(zca.transform(X[:, P], np.float64), Z[:, P])
    # the whitened rows with their mirror images: covariance U diag(lambda / (lambda + eps)) U^T,
    # whose trace is the sum of lambda / (lambda + eps)
    lam = zca.eigenvalues
    assert np.trace(union_cov(Z, Z[:, P])) == pytest.approx(np.sum(lam / (lam + EPS)), rel=1e-9)
