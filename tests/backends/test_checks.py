"""Bad input at the op boundary, per compiled backend and op: refused alike, or converted.

Every backend validates through ``fastnet.backends.checks``, so a bad argument gives the same
``OpInputError`` (a ValueError) with the same sentence, naming the op and the argument, from
the reference, the Numba and the Cython backend; nothing bad reaches a compiled loop (where an
out-of-range label would be an out-of-bounds write, not an exception). What can be converted
safely (a non-contiguous or read-only input) is, and the result equals the reference's.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from test_ops_equivalence import (
    COMPILED,
    INPLACE_ARGS,
    assert_matches_reference,
    compiled_module,
    copy_args,
    make_inputs,
)

from fastnet.backends import OPS
from fastnet.backends import reference as ref
from fastnet.backends.checks import OpInputError


@pytest.fixture(params=COMPILED)
def backend(request):
    return compiled_module(request.param)


def arg_names(op: str) -> list[str]:
    return list(inspect.signature(getattr(ref, op)).parameters)


def good_args(op: str, dtype=np.float32) -> list:
    return list(make_inputs(op, 6, 5, dtype, np.random.default_rng(11)))


def is_labels(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind in "iu"


def is_float_array(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def refused_alike(backend, op: str, args: list, name: str | tuple[str, ...]) -> str:
    """Both the reference and the backend refuse ``args`` with the same one-line sentence, which
    starts with the op and names the argument (``name``, or one of several)."""
    # The very same objects go to both: layout and flags matter, and a refusal writes nothing.
    with pytest.raises(OpInputError) as want:
        getattr(ref, op)(*args)
    with pytest.raises(OpInputError) as got:
        getattr(backend, op)(*args)
    message = str(got.value)
    assert message == str(want.value)
    names = (name,) if isinstance(name, str) else name
    assert message.startswith(f"{op}: ") and any(f" {n} " in message for n in names), message
    assert "\n" not in message
    return message


def float_array_positions(op: str) -> list[tuple[int, str]]:
    return [(i, arg_names(op)[i]) for i, a in enumerate(good_args(op)) if is_float_array(a)]


CASES = [(op, i, name) for op in OPS for i, name in float_array_positions(op)]
CASE_IDS = [f"{op}-{name}" for op, _, name in CASES]


# ------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("op, i, name", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bad", [np.int64, np.int32, np.float16, np.complex128, bool])
def test_wrong_dtype_is_refused(backend, op, i, name, bad):
    args = good_args(op)
    args[i] = args[i].astype(bad)
    refused_alike(backend, op, args, name)


@pytest.mark.parametrize("op, i, name", CASES, ids=CASE_IDS)
def test_mixed_float32_float64_is_refused(backend, op, i, name):
    args = good_args(op, np.float32)
    if sum(is_float_array(a) for a in args) < 2:
        pytest.skip(f"{op} has a single float array")
    args[i] = args[i].astype(np.float64)
    # The message names whichever array disagrees with the first one checked.
    message = refused_alike(backend, op, args, tuple(n for _, n in float_array_positions(op)))
    assert "float32" in message and "float64" in message


def test_a_list_is_refused(backend):
    args = good_args("relu_backward")
    args[0] = args[0].tolist()
    refused_alike(backend, "relu_backward", args, "G")


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("op, i, name", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("how", ["1-D", "3-D", "0-D", "one short", "empty"])
def test_wrong_shape_is_refused(backend, op, i, name, how):
    args = good_args(op)
    a = args[i]
    if how == "1-D":
        if a.ndim == 1:
            pytest.skip("already 1-D")
        args[i] = a.ravel()
    elif how == "3-D":
        args[i] = a[None]
    elif how == "0-D":
        args[i] = a.reshape(-1)[:1].reshape(())
    elif how == "one short":
        args[i] = np.ascontiguousarray(a[..., :-1])
    elif how == "empty":
        args[i] = np.ascontiguousarray(a[:0])
    if how == "one short":
        try:
            getattr(ref, op)(*copy_args(tuple(args)))
        except OpInputError:
            pass
        else:
            pytest.skip("one column fewer is still a consistent input here")
    names = (name,)
    if how == "one short" or op.endswith("_inplace"):
        # Shapes are checked against the first array checked: shortening that one makes the
        # next array the mismatched one, and the message names that one instead. theta may
        # have any shape, so a wrong one shows as grad not matching it.
        names = tuple(arg_names(op))
    refused_alike(backend, op, args, names)


def test_bn_needs_two_rows(backend):
    S, gamma, beta, eps = good_args("bn_relu_forward_train")
    message = refused_alike(backend, "bn_relu_forward_train", [S[:1].copy(), gamma, beta, eps], "S")
    assert "at least 2" in message


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize("op", ["bn_relu_forward_train", "bn_relu_forward_eval", "bn_relu_backward", "sgd_update_inplace", "linear_backward",
                                "bn_forward_train", "bn_forward_eval", "bn_backward", "adam_update_inplace"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "abc", None])
def test_bad_scalar_is_refused(backend, op, value):
    args = good_args(op)
    i = next(i for i, a in enumerate(args) if isinstance(a, float))
    args[i] = value
    refused_alike(backend, op, args, arg_names(op)[i])


def test_eps_zero_is_refused(backend):
    args = good_args("bn_relu_forward_train")
    args[3] = 0.0
    refused_alike(backend, "bn_relu_forward_train", args, "eps")


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize("op", ["softmax_xent", "softmax_xent_backward"])
@pytest.mark.parametrize("bad", ["too large", "negative", "float", "short", "2-D", "list"])
def test_bad_labels_are_refused(backend, op, bad):
    args = good_args(op)
    S, y = args
    K = S.shape[1]
    if bad == "too large":
        y = y.copy()
        y[3] = K  # would index one past the row: an out-of-bounds write in a compiled loop
    elif bad == "negative":
        y = y.copy()
        y[0] = -1  # wraparound=False: would read before the row
    elif bad == "float":
        y = y.astype(np.float64)
    elif bad == "short":
        y = y[:-1]
    elif bad == "2-D":
        y = y[:, None]
    elif bad == "list":
        y = y.tolist()
    refused_alike(backend, op, [S, y], "y")


@pytest.mark.parametrize("op", ["softmax_xent", "softmax_xent_backward"])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64, np.uint64])
def test_any_integer_label_dtype_is_accepted(backend, op, label_dtype):
    S, y = good_args(op)
    assert_matches_reference(op, backend, (S, y.astype(label_dtype)), np.float32)


# -------------------------------------------------------------------- layout, read-only


def non_contiguous(a: np.ndarray, how: str) -> np.ndarray:
    """The same values in a layout that is not C-contiguous."""
    if how == "fortran":  # column-major; a vector has no other order, so stays as it is
        return np.asfortranarray(a) if a.ndim == 2 else a
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)  # every other column
    wide[..., ::2] = a
    return wide[..., ::2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("how", ["strided", "fortran"])
@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs_are_converted(backend, op, how, dtype):
    args = list(make_inputs(op, 6, 5, dtype, np.random.default_rng(12)))
    targets = set(INPLACE_ARGS.get(op, {}).values())  # in-place targets cannot be converted
    for i in range(len(args)):
        if isinstance(args[i], np.ndarray) and i not in targets:
            args[i] = non_contiguous(args[i], how)
    assert any(isinstance(a, np.ndarray) and not a.flags.c_contiguous for i, a in enumerate(args) if i not in targets)
    assert_matches_reference(op, backend, tuple(args), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", OPS)
def test_read_only_inputs_are_fine(backend, op, dtype):
    """Read-only inputs (a memory-mapped data set, a frozen parameter) work and stay as they were."""
    args = make_inputs(op, 6, 5, dtype, np.random.default_rng(13))
    targets = set(INPLACE_ARGS.get(op, {}).values())
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and i not in targets:
            a.flags.writeable = False
    assert_matches_reference(op, backend, args, dtype)


@pytest.mark.parametrize("how", ["read-only", "strided", "fortran", "list"])
def test_bad_in_place_target_is_refused(backend, how):
    theta, grad, eta = good_args("sgd_update_inplace")
    before = theta.copy()
    if how == "read-only":
        theta.flags.writeable = False
    elif how == "strided":
        theta = non_contiguous(theta, "strided")
    elif how == "fortran":
        theta = np.asfortranarray(theta)
        grad = np.asfortranarray(grad)
    else:
        theta = theta.tolist()
    refused_alike(backend, "sgd_update_inplace", [theta, grad, eta], "theta")
    if how == "read-only":
        np.testing.assert_array_equal(theta, before)


@pytest.mark.parametrize("how", ["shape", "dtype", "list"])
def test_bad_gradient_for_in_place_update_is_refused(backend, how):
    theta, grad, eta = good_args("sgd_update_inplace")
    before = theta.copy()
    grad = {"shape": grad[:-1], "dtype": grad.astype(np.float64), "list": grad.tolist()}[how]
    refused_alike(backend, "sgd_update_inplace", [theta, grad, eta], "grad")
    np.testing.assert_array_equal(theta, before)  # refused before any write
