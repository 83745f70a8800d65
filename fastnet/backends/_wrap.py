"""The checked ops of the compiled backends, written once over their kernels.

Numba (``numba_ops``) and Cython (``cython_ops``) compile the same loops; what surrounds a
kernel call -- checking the inputs with the shared ``checks`` helpers exactly as the
reference does (so every backend fails alike), allocating the outputs, casting the scalars to
the arrays' dtype -- is the same for both and lives here. ``make_ops(kernel)`` builds the
ops over ``kernel(name, dtype)``, which returns the backend's compiled kernel of that name
for that dtype; each kernel fills the outputs it is handed and trusts its inputs.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numpy.typing import NDArray

from fastnet.backends import checks as chk
from fastnet.backends.reference import BNGrad, BNTrain, Xent

#: The ops :func:`make_ops` builds (the rest of ``OPS``, the matrix products, are the
#: reference's: BLAS through NumPy).
KERNEL_OPS = ("bias_relu_forward", "relu_backward", "bn_relu_forward_train", "bn_relu_forward_eval", "bn_relu_backward", "softmax_xent", "softmax_xent_backward", "sgd_update_inplace", "bn_forward_train", "bn_forward_eval", "bn_backward", "adam_update_inplace")


def make_ops(kernel) -> SimpleNamespace:
    """The ops of :data:`KERNEL_OPS` over ``kernel(name, dtype)`` (module docstring)."""

    def bn_train(name: str, S, gamma, beta, eps) -> BNTrain:
        """A batch-norm forward op in training mode (with or without the ReLU: ``name``)."""
        S, gamma, beta, eps = chk.bn_forward_args(name, S, gamma, beta, eps, train=True)
        m = S.shape[1]
        X, S_hat, mu, v = np.empty_like(S), np.empty_like(S), np.empty(m, S.dtype), np.empty(m, S.dtype)
        kernel(name, S.dtype)(S, gamma, beta, eps, X, S_hat, mu, v)
        return BNTrain(X, S_hat, mu, v)

    def bn_eval(name: str, S, gamma, beta, mu, v, eps) -> NDArray:
        """A batch-norm forward op in test mode (with or without the ReLU: ``name``)."""
        S, gamma, beta, mu, v, eps = chk.bn_forward_args(name, S, gamma, beta, eps, mu, v, train=False)
        X = np.empty_like(S)
        kernel(name, S.dtype)(S, gamma, beta, mu, v, eps, X)
        return X

    def bias_relu_forward(Z: NDArray, b: NDArray) -> NDArray:
        """Bias and ReLU of a layer without batch norm: ``X = max(0, Z + b)``, eqs (1)-(2).

        Parameters
        ----------
        Z : (n, m) float32/float64, the product X^(l-1) W^T without bias.
        b : (m,) of Z's dtype.

        Returns
        -------
        X : (n, m) array of Z.dtype.
        """
        op = "bias_relu_forward"
        Z = chk.matrix(op, "Z", Z)
        b = chk.vector(op, "b", b, Z.shape[1], Z.dtype, " to match Z.shape[1]")
        X = np.empty_like(Z)
        kernel("bias_relu_forward", Z.dtype)(Z, b, X)
        return X


    def relu_backward(G: NDArray, X: NDArray) -> NDArray:
        """ReLU mask on the gradient: ``G * Ind(X > 0)``, eqs (24) and (30).

        Parameters
        ----------
        G : (n, m) float32/float64 gradient w.r.t. the layer output.
        X : (n, m) the layer output x^(l) = max(0, .), same dtype.

        Returns
        -------
        (n, m) array of G.dtype.
        """
        op = "relu_backward"
        G = chk.matrix(op, "G", G)
        X = chk.matrix(op, "X", X, G.dtype, G.shape, " to match G")
        G_out = np.empty_like(G)
        kernel("relu_backward", G.dtype)(G, X, G_out)
        return G_out


    def bn_relu_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
        """Batch norm with batch statistics, scale-shift and ReLU, fused: eqs (13)-(17).

        Parameters
        ----------
        S : (n, m) float32/float64 un-normalised scores, eq (12); n >= 2.
        gamma, beta : (m,) scale and shift, S's dtype.
        eps : the small constant of eq (11).

        Returns
        -------
        BNTrain(X, S_hat, mu, v), arrays of S.dtype; v is the biased variance of eq (14).

        Notes
        -----
        One kernel: mean pass, variance pass over S - mu, then S_hat and X in one sweep.
        """
        return bn_train("bn_relu_forward_train", S, gamma, beta, eps)


    def bn_relu_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
        """Batch norm with fixed (running) statistics, scale-shift and ReLU: eqs (6)-(8), (11).

        Parameters
        ----------
        S : (n, m) float32/float64 scores.
        gamma, beta, mu, v : (m,) of S's dtype; mu and v are only read.
        eps : as in eq (11).

        Returns
        -------
        X : (n, m) array of S.dtype.
        """
        return bn_eval("bn_relu_forward_eval", S, gamma, beta, mu, v, eps)


    def bn_relu_backward(G: NDArray, X: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
        """Back through ReLU, scale-shift and batch norm of one layer, fused: eqs (24)-(27), (30)-(37).

        Parameters
        ----------
        G : (n, m) float32/float64 gradient w.r.t. the layer output x^(l) (before the ReLU mask).
        X, S_hat : (n, m) and v : (m,), from ``bn_relu_forward_train`` of this layer.
        gamma : (m,) scale. eps : as in the forward pass.

        Returns
        -------
        BNGrad(G, dgamma, dbeta), arrays of G.dtype; G = dJ/dS^(l) per sample (no 1/n).

        Notes
        -----
        Computes ``G = sigma1 * gamma * (Gm - dbeta - S_hat * dgamma)`` with ``Gm = G * (X > 0)``,
        algebraically equal to eqs (31)-(37); the derivation is beside the Numba kernel.
        """
        G, X, S_hat, gamma, v, eps = chk.bn_backward_args("bn_relu_backward", G, S_hat, gamma, v, eps, X)
        n, m = G.shape
        G_out = np.empty_like(G)
        dgamma = np.empty(m, G.dtype)
        dbeta = np.empty(m, G.dtype)
        kernel("bn_relu_backward", G.dtype)(G, X, S_hat, gamma, v, eps, G_out, dgamma, dbeta)
        return BNGrad(G_out, dgamma, dbeta)


    def softmax_xent(S: NDArray, y: NDArray) -> Xent:
        """Softmax probabilities, eqs (4)/(19), and the cross-entropy loss of each sample.

        Parameters
        ----------
        S : (n, K) float32/float64 scores.
        y : (n,) integer labels in 0..K-1.

        Returns
        -------
        Xent(P, loss): P (n, K) and loss (n,), of S.dtype. Max-shifted, as the reference.
        """
        op = "softmax_xent"
        S = chk.matrix(op, "S", S)
        y = chk.labels(op, y, S.shape[0], S.shape[1])
        P = np.empty_like(S)
        loss = np.empty(S.shape[0], S.dtype)
        kernel("softmax_xent", S.dtype)(S, y, P, loss)
        return Xent(P, loss)


    def softmax_xent_backward(P: NDArray, y: NDArray) -> NDArray:
        """Gradient of the per-sample cross-entropy w.r.t. the scores: ``G = -(Y - P)``, eq (21).

        Parameters
        ----------
        P : (n, K) float32/float64 probabilities from ``softmax_xent``.
        y : (n,) integer labels in 0..K-1.

        Returns
        -------
        G : (n, K) array of P.dtype.
        """
        op = "softmax_xent_backward"
        P = chk.matrix(op, "P", P)
        y = chk.labels(op, y, P.shape[0], P.shape[1])
        G = np.empty_like(P)
        kernel("softmax_xent_backward", P.dtype)(P, y, G)
        return G


    def sgd_update_inplace(theta: NDArray, grad: NDArray, eta: float) -> None:
        """One gradient-descent step on a parameter, in place: ``theta -= eta * grad``.

        Parameters
        ----------
        theta : float32/float64 array of any shape, C-contiguous and writeable; updated in place.
        grad : array of theta's shape and dtype (the full gradient of eq (20)).
        eta : non-negative learning rate.
        """
        op = "sgd_update_inplace"
        theta = chk.inplace_target(op, "theta", theta)
        grad = chk.like(op, "grad", grad, "theta", theta)
        eta = chk.scalar(op, "eta", eta, nonnegative=True)
        # reshape(-1) of a C-contiguous theta is a view, so the kernel writes into theta itself;
        # for grad it copies only if grad is not contiguous.
        kernel("sgd_update", theta.dtype)(theta.reshape(-1), grad.reshape(-1), theta.dtype.type(eta))


    def bn_forward_train(S: NDArray, gamma: NDArray, beta: NDArray, eps: float) -> BNTrain:
        """Batch norm with batch statistics and scale-shift, no ReLU, fused: eqs (13)-(16).

        Parameters
        ----------
        S : (n, m) float32/float64 values to normalise; n >= 2.
        gamma, beta : (m,) scale and shift, S's dtype.
        eps : the small constant of eq (11).

        Returns
        -------
        BNTrain(X, S_hat, mu, v), arrays of S.dtype; X = gamma * S_hat + beta.
        """
        return bn_train("bn_forward_train", S, gamma, beta, eps)


    def bn_forward_eval(S: NDArray, gamma: NDArray, beta: NDArray, mu: NDArray, v: NDArray, eps: float) -> NDArray:
        """Batch norm with fixed statistics and scale-shift, no ReLU: eqs (6)-(7), (11).

        Parameters
        ----------
        S : (n, m) float32/float64.
        gamma, beta, mu, v : (m,) of S's dtype; mu and v are only read.
        eps : as in eq (11).

        Returns
        -------
        X : (n, m) array of S.dtype.
        """
        return bn_eval("bn_forward_eval", S, gamma, beta, mu, v, eps)


    def bn_backward(G: NDArray, S_hat: NDArray, gamma: NDArray, v: NDArray, eps: float) -> BNGrad:
        """Back through scale-shift and batch norm, no ReLU mask, fused: eqs (25)-(27), (31)-(37).

        Parameters
        ----------
        G : (n, m) float32/float64 gradient w.r.t. the BN output.
        S_hat : (n, m) and v : (m,), from ``bn_forward_train``. gamma : (m,). eps : as forward.

        Returns
        -------
        BNGrad(G, dgamma, dbeta), arrays of G.dtype; G = dJ/d(BN input) per sample (no 1/n).
        """
        G, _, S_hat, gamma, v, eps = chk.bn_backward_args("bn_backward", G, S_hat, gamma, v, eps)
        n, m = G.shape
        G_out = np.empty_like(G)
        dgamma = np.empty(m, G.dtype)
        dbeta = np.empty(m, G.dtype)
        kernel("bn_backward", G.dtype)(G, S_hat, gamma, v, eps, G_out, dgamma, dbeta)
        return BNGrad(G_out, dgamma, dbeta)


    def adam_update_inplace(theta: NDArray, grad: NDArray, m: NDArray, v: NDArray, eta: float,
                            beta1: float, beta2: float, eps: float, t: int) -> None:
        """One Adam step on a parameter, in place on theta, m and v, fused (one pass).

        Parameters
        ----------
        theta, m, v : float32/float64 arrays of one shape, C-contiguous, writeable; updated in place.
        grad : array of theta's shape and dtype (the full gradient of eq (20)).
        eta : learning rate. beta1, beta2 : in [0, 1). eps : positive. t : step, from 1.
        """
        theta, grad, m, v, eta, beta1, beta2, eps, t = chk.adam_args("adam_update_inplace", theta, grad, m, v, eta, beta1, beta2, eps, t)
        dt = theta.dtype.type
        kernel("adam_update", theta.dtype)(theta.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), dt(beta1), dt(1 - beta1), dt(beta2),
                            dt(1 - beta2), dt(eta / (1 - beta1 ** t)), dt(1 / (1 - beta2 ** t)), dt(eps))

    return SimpleNamespace(bias_relu_forward=bias_relu_forward, relu_backward=relu_backward, bn_relu_forward_train=bn_relu_forward_train, bn_relu_forward_eval=bn_relu_forward_eval, bn_relu_backward=bn_relu_backward, softmax_xent=softmax_xent, softmax_xent_backward=softmax_xent_backward, sgd_update_inplace=sgd_update_inplace, bn_forward_train=bn_forward_train, bn_forward_eval=bn_forward_eval, bn_backward=bn_backward, adam_update_inplace=adam_update_inplace)
