"""The checked ops of the compiled backends, written once over their kernels.

Numba (``numba_ops``) and Cython (``cython_ops``) compile the same loops; what surrounds a
kernel call -- checking the inputs with the shared ``checks`` helpers exactly as the
reference does (so every backend fails alike), allocating the outputs, casting the scalars to
the arrays' dtype -- is the same for both and lives here, in :class:`CompiledOps`: one method
per op of :data:`~fastnet.backends.ops.KERNEL_OPS`, each documented by the reference op of
its name (:func:`specified_by_reference`). A backend module makes one ``CompiledOps`` over
its kernels and binds its methods as the module's ops. Each kernel fills the outputs it is
handed and trusts its inputs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from fastnet.backends import checks as chk
from fastnet.backends import reference
from fastnet.backends.reference import BNGrad, BNTrain, Xent

#: kernels[dtype][kernel_name(op)]: the backend's compiled kernel of an op for that dtype.
KernelTable = Mapping[np.dtype, Mapping[str, Callable]]


def specified_by_reference(method: Callable) -> Callable:
    """Give an op the docstring of the reference op of the same name: the reference is the
    specification, and one text per op says what every backend computes."""
    method.__doc__ = getattr(reference, method.__name__).__doc__
    return method


class CompiledOps:
    """The ops of :data:`~fastnet.backends.ops.KERNEL_OPS` over the kernels of one backend.

    A call checks and converts its inputs, allocates the outputs, picks the kernel of the
    arrays' dtype from ``kernels`` (two dictionary look-ups) and calls it.
    """

    def __init__(self, kernels: KernelTable):
        self._kernels = kernels

    # ---------------------------------------------------------------------------- ReLU

    @specified_by_reference
    def bias_relu_forward(self, Z: NDArray, b: NDArray) -> NDArray:
        op = "bias_relu_forward"
        Z = chk.matrix(op, "Z", Z)
        b = chk.vector(op, "b", b, Z.shape[1], Z.dtype, " to match Z.shape[1]")
        X = np.empty_like(Z)
        self._kernels[Z.dtype]["bias_relu_forward"](Z, b, X)
        return X

    @specified_by_reference
    def relu_backward(self, G: NDArray, X: NDArray) -> NDArray:
        op = "relu_backward"
        G = chk.matrix(op, "G", G)
        X = chk.matrix(op, "X", X, G.dtype, G.shape, " to match G")
        G_out = np.empty_like(G)
        self._kernels[G.dtype]["relu_backward"](G, X, G_out)
        return G_out

    # ---------------------------------------------------------------------- batch norm

    def _bn_train(self, op: str, S, gamma, beta, eps) -> BNTrain:
        """A batch-norm forward op in training mode (with or without the ReLU: ``op``)."""
        S, gamma, beta, eps = chk.bn_forward_args(op, S, gamma, beta, eps, train=True)
        m = S.shape[1]
        X, S_hat, mu, v = np.empty_like(S), np.empty_like(S), np.empty(m, S.dtype), np.empty(m, S.dtype)
        self._kernels[S.dtype][op](S, gamma, beta, eps, X, S_hat, mu, v)
        return BNTrain(X, S_hat, mu, v)

    def _bn_eval(self, op: str, S, gamma, beta, mu, v, eps) -> NDArray:
        """A batch-norm forward op in test mode (with or without the ReLU: ``op``)."""
        S, gamma, beta, mu, v, eps = chk.bn_forward_args(op, S, gamma, beta, eps, mu, v, train=False)
        X = np.empty_like(S)
        self._kernels[S.dtype][op](S, gamma, beta, mu, v, eps, X)
        return X

    def _bn_grad(self, op: str, G: NDArray, args: tuple) -> BNGrad:
        """A batch-norm backward op's outputs allocated and its kernel run on ``args`` (checked)."""
        m = G.shape[1]
        G_out, dgamma, dbeta = np.empty_like(G), np.empty(m, G.dtype), np.empty(m, G.dtype)
        self._kernels[G.dtype][op](*args, G_out, dgamma, dbeta)
        return BNGrad(G_out, dgamma, dbeta)

    @specified_by_reference
    def bn_relu_forward_train(self, S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
        return self._bn_train("bn_relu_forward_train", S, gamma, beta, eps)

    @specified_by_reference
    def bn_relu_forward_eval(self, S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
        return self._bn_eval("bn_relu_forward_eval", S, gamma, beta, mu, v, eps)

    @specified_by_reference
    def bn_relu_backward(self, G: NDArray, X: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
        G, X, S_hat, gamma, v, eps = chk.bn_backward_args("bn_relu_backward", G, S_hat, gamma, v, eps, X)
        return self._bn_grad("bn_relu_backward", G, (G, X, S_hat, gamma, v, eps))

    @specified_by_reference
    def bn_forward_train(self, S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
        return self._bn_train("bn_forward_train", S, gamma, beta, eps)

    @specified_by_reference
    def bn_forward_eval(self, S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
        return self._bn_eval("bn_forward_eval", S, gamma, beta, mu, v, eps)

    @specified_by_reference
    def bn_backward(self, G: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
        G, _, S_hat, gamma, v, eps = chk.bn_backward_args("bn_backward", G, S_hat, gamma, v, eps)
        return self._bn_grad("bn_backward", G, (G, S_hat, gamma, v, eps))

    # ------------------------------------------------------------ softmax cross-entropy

    @specified_by_reference
    def softmax_xent(self, S: NDArray, y: NDArray) -> Xent:
        op = "softmax_xent"
        S = chk.matrix(op, "S", S)
        y = chk.labels(op, y, S.shape[0], S.shape[1])
        P = np.empty_like(S)
        loss = np.empty(S.shape[0], S.dtype)
        self._kernels[S.dtype]["softmax_xent"](S, y, P, loss)
        return Xent(P, loss)

    @specified_by_reference
    def softmax_xent_backward(self, P: NDArray, y: NDArray) -> NDArray:
        op = "softmax_xent_backward"
        P = chk.matrix(op, "P", P)
        y = chk.labels(op, y, P.shape[0], P.shape[1])
        G = np.empty_like(P)
        self._kernels[P.dtype]["softmax_xent_backward"](P, y, G)
        return G

    # ---------------------------------------------------------------------- parameters

    @specified_by_reference
    def sgd_update_inplace(self, theta: NDArray, grad: NDArray, eta: float) -> None:
        op = "sgd_update_inplace"
        theta = chk.inplace_target(op, "theta", theta)
        grad = chk.like(op, "grad", grad, "theta", theta)
        eta = chk.scalar(op, "eta", eta, nonnegative=True)
        # reshape(-1) of a C-contiguous theta is a view, so the kernel writes into theta itself;
        # for grad it copies only if grad is not contiguous. eta in theta's dtype, as the reference.
        self._kernels[theta.dtype]["sgd_update"](theta.reshape(-1), grad.reshape(-1), theta.dtype.type(eta))

    @specified_by_reference
    def adam_update_inplace(self, theta: NDArray, grad: NDArray, m: NDArray, v: NDArray, eta: float,
                            beta1: float, beta2: float, eps: float, t: int) -> None:
        theta, grad, m, v, eta, beta1, beta2, eps, t = chk.adam_args("adam_update_inplace", theta, grad, m, v, eta, beta1, beta2, eps, t)
        dt = theta.dtype.type
        # The scalars in theta's dtype, each rounded once as the reference rounds it.
        self._kernels[theta.dtype]["adam_update"](
            theta.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), dt(beta1), dt(1 - beta1), dt(beta2),
            dt(1 - beta2), dt(eta / (1 - beta1 ** t)), dt(1 / (1 - beta2 ** t)), dt(eps))
