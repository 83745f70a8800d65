"""The k-layer network: parameters, running BN statistics, forward and backward passes.

Written once over the ops of a backend (``ops`` = ``fastnet.backends.resolve(...).ops``); this
module never asks which backend it runs on. Rows are samples: a mini-batch X is (n, d) and
layer l has weights W_l of shape (m_l, m_{l-1}) as in the assignment.

Layers l = 1..k-1 are hidden: linear, then (with batch norm) normalise + scale-shift, then
ReLU; layer k is linear and feeds the softmax. With batch norm the hidden layers carry no bias
b_l: batch norm subtracts it away again (the assignment notes these biases are superfluous and
are learnt as zero), so dropping them changes neither the function nor the other gradients.

Parameter names are 1-based like the assignment: ``W1, b1, gamma1, beta1, ..., Wk, bk``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError

INITS = ("he", "xavier", "normal")
DEFAULT_EPS = 1e-8
DEFAULT_ALPHA = 0.9
EVAL_CHUNK = 10_000  # rows per forward pass in evaluation: bounds the memory of the scores


@dataclass
class Layer:
    """One layer's parameters and (for batch-norm layers) running statistics."""

    W: NDArray  # (m_out, m_in)
    b: NDArray | None  # (m_out,); None on batch-norm layers
    gamma: NDArray | None = None  # (m_out,), batch-norm layers only
    beta: NDArray | None = None
    mu_av: NDArray | None = None  # running mean, eq (38); None until the first batch
    v_av: NDArray | None = None  # running variance, eq (39)


@dataclass
class Network:
    """A k-layer fully-connected network, optionally with batch norm before each ReLU.

    ``alpha`` is the decay of the running averages of eqs (38)-(39) (PyTorch's momentum is
    1 - alpha); ``eps`` is the constant of eq (11).
    """

    layers: list[Layer]
    bn: bool
    eps: float = DEFAULT_EPS
    alpha: float = DEFAULT_ALPHA
    init: str = "he"
    sigma: float | None = None

    @property
    def k(self) -> int:
        return len(self.layers)

    @property
    def sizes(self) -> list[int]:
        """[d, m_1, ..., m_{k-1}, K]."""
        return [self.layers[0].W.shape[1]] + [layer.W.shape[0] for layer in self.layers]

    @property
    def hidden(self) -> list[int]:
        return self.sizes[1:-1]

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].W.dtype

    def params(self) -> dict[str, NDArray]:
        """The trainable arrays by name (the arrays themselves, so updates act in place)."""
        out: dict[str, NDArray] = {}
        for l, layer in enumerate(self.layers, start=1):
            out[f"W{l}"] = layer.W
            if layer.b is not None:
                out[f"b{l}"] = layer.b
            if layer.gamma is not None:
                out[f"gamma{l}"] = layer.gamma
                out[f"beta{l}"] = layer.beta
        return out

    def running_stats(self) -> dict[str, NDArray]:
        """The running BN averages by name (``mu_av1``, ``v_av1``, ...), once estimated."""
        out: dict[str, NDArray] = {}
        for l, layer in enumerate(self.layers, start=1):
            if layer.mu_av is not None:
                out[f"mu_av{l}"] = layer.mu_av
                out[f"v_av{l}"] = layer.v_av
        return out


def init_network(
    d: int,
    hidden,
    K: int,
    *,
    bn: bool = True,
    init: str = "he",
    sigma: float | None = None,
    dtype=np.float32,
    eps: float = DEFAULT_EPS,
    alpha: float = DEFAULT_ALPHA,
    rng: np.random.Generator,
) -> Network:
    """A new network with weights drawn by ``init`` and biases, beta at 0, gamma at 1.

    init : "he" (std sqrt(2 / m_in)), "xavier" (std sqrt(1 / m_in)) or "normal" (std ``sigma``,
        the same at every layer, for the assignment's sensitivity-to-initialisation study).
    Weights are drawn in float64 and then cast, so float32 and float64 networks of one seed
    start from the same numbers.
    """
    hidden = [int(m) for m in hidden]
    if d < 1 or K < 2 or any(m < 1 for m in hidden):
        raise ConfigError(f"layer sizes must be positive (d={d}, hidden={hidden}, K={K})")
    if init not in INITS:
        raise ConfigError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
    if init == "normal" and (sigma is None or not sigma > 0):
        raise ConfigError("normal initialisation needs a positive --sigma")
    if not eps > 0:
        raise ConfigError(f"eps must be positive, got {eps}")
    if not 0 <= alpha < 1:
        raise ConfigError(f"alpha must be in [0, 1), got {alpha}")
    dtype = np.dtype(dtype)
    sizes = [d] + hidden + [K]
    layers = []
    for l in range(1, len(sizes)):
        m_in, m_out = sizes[l - 1], sizes[l]
        std = {"he": np.sqrt(2.0 / m_in), "xavier": np.sqrt(1.0 / m_in), "normal": sigma}[init]
        W = (std * rng.standard_normal((m_out, m_in))).astype(dtype)
        is_hidden_bn = bn and l < len(sizes) - 1
        layer = Layer(W=W, b=None if is_hidden_bn else np.zeros(m_out, dtype))
        if is_hidden_bn:
            layer.gamma = np.ones(m_out, dtype)
            layer.beta = np.zeros(m_out, dtype)
        layers.append(layer)
    return Network(layers, bn=bn, eps=float(eps), alpha=float(alpha), init=init, sigma=sigma)


# -------------------------------------------------------------------------------- forward


class LayerCache(NamedTuple):
    """What the backward pass needs of a hidden layer l (the assignment's stored batches)."""

    X: NDArray  # x^(l), the layer's output (its > 0 is the ReLU mask)
    S_hat: NDArray | None = None  # BN layers: normalised scores, eq (15)
    mu: NDArray | None = None  # BN layers: batch mean, eq (13)
    v: NDArray | None = None  # BN layers: batch variance, eq (14)


@dataclass
class Cache:
    """The forward pass of one mini-batch, kept for the backward pass."""

    X0: NDArray  # the input batch x^(0)
    hidden: list[LayerCache] = field(default_factory=list)
    P: NDArray | None = None  # softmax probabilities, eq (19)
    loss: NDArray | None = None  # per-sample cross-entropy


def forward_train(net: Network, X: NDArray, y: NDArray, ops) -> Cache:
    """Forward pass with batch statistics: eqs (12)-(19) with BN, (1)-(4) without."""
    cache = Cache(X0=X)
    for layer in net.layers[:-1]:
        if net.bn:
            S = ops.linear_forward(X, layer.W)  # (12), no bias: BN removes it
            out = ops.bn_relu_forward_train(S, layer.gamma, layer.beta, net.eps)  # (13)-(17)
            cache.hidden.append(LayerCache(out.X, out.S_hat, out.mu, out.v))
            X = out.X
        else:
            X = ops.bias_relu_forward(ops.linear_forward(X, layer.W), layer.b)  # (1), (2)
            cache.hidden.append(LayerCache(X))
    last = net.layers[-1]
    S = ops.linear_forward(X, last.W, last.b)  # (18)
    cache.P, cache.loss = ops.softmax_xent(S, y)  # (19) and l_cross
    return cache


def forward_eval(net: Network, X: NDArray, ops) -> NDArray:
    """Scores s (n, K) at test time, BN with the running averages: eqs (5)-(11) / (1)-(3)."""
    for layer in net.layers[:-1]:
        if net.bn:
            if layer.mu_av is None:
                raise ConfigError("the network has no running BN statistics yet; train it for at least one step")
            S = ops.linear_forward(X, layer.W)  # (5)
            X = ops.bn_relu_forward_eval(S, layer.gamma, layer.beta, layer.mu_av, layer.v_av, net.eps)  # (6)-(8)
        else:
            X = ops.bias_relu_forward(ops.linear_forward(X, layer.W), layer.b)  # (1), (2)
    last = net.layers[-1]
    return ops.linear_forward(X, last.W, last.b)  # (9)


def update_running_stats(net: Network, cache: Cache) -> None:
    """Exponential moving averages of the batch means and variances, eqs (38)-(39).

    The first batch initialises the averages, as the assignment suggests.
    """
    a = net.alpha
    for layer, lc in zip(net.layers, cache.hidden):
        if layer.mu_av is None:
            layer.mu_av, layer.v_av = lc.mu.copy(), lc.v.copy()
        else:
            layer.mu_av *= a
            layer.mu_av += (1 - a) * lc.mu  # (38)
            layer.v_av *= a
            layer.v_av += (1 - a) * lc.v  # (39)


# ------------------------------------------------------------------------------- backward


def backward(net: Network, cache: Cache, y: NDArray, lam: float, ops) -> dict[str, NDArray]:
    """Gradients of the mini-batch cost J (eq 20) for every parameter: eqs (21)-(37).

    Returns a dict with the names of :meth:`Network.params`.
    """
    grads: dict[str, NDArray] = {}
    G = ops.softmax_xent_backward(cache.P, y)  # (21)
    inputs = [cache.X0] + [lc.X for lc in cache.hidden]  # x^(0), ..., x^(k-1)
    for l in range(net.k, 0, -1):
        layer = net.layers[l - 1]
        g = ops.linear_backward(G, inputs[l - 1], layer.W, lam, need_dX=l > 1)  # (22)/(28), (23)/(29)
        grads[f"W{l}"] = g.dW
        if layer.b is not None:
            grads[f"b{l}"] = g.db
        if l == 1:
            break
        below = cache.hidden[l - 2]  # layer l-1
        if net.bn:
            bg = ops.bn_relu_backward(g.dX, below.X, below.S_hat, net.layers[l - 2].gamma, below.v, net.eps)  # (24)-(27), (30)-(37)
            grads[f"gamma{l - 1}"], grads[f"beta{l - 1}"] = bg.dgamma, bg.dbeta
            G = bg.G
        else:
            G = ops.relu_backward(g.dX, below.X)  # (24)/(30)
    return grads


# ---------------------------------------------------------------------------- evaluation


class Metrics(NamedTuple):
    loss: float  # mean cross-entropy
    cost: float  # loss + lam * sum ||W||^2, eq (20)
    accuracy: float  # fraction correct


def l2_penalty(net: Network, lam: float) -> float:
    """lam * sum_l ||W_l||^2, the regularisation term of eq (20), in float64."""
    return lam * sum(float(np.dot(w.ravel().astype(np.float64), w.ravel().astype(np.float64))) for w in (L.W for L in net.layers))


def evaluate(net: Network, X: NDArray, y: NDArray, lam: float, ops, chunk: int = EVAL_CHUNK) -> Metrics:
    """Loss, cost and accuracy of the network in test mode (running BN statistics)."""
    n = X.shape[0]
    total_loss = 0.0
    correct = 0
    for start in range(0, n, chunk):
        Xc, yc = X[start : start + chunk], y[start : start + chunk]
        S = forward_eval(net, Xc, ops)
        total_loss += float(ops.softmax_xent(S, yc).loss.sum(dtype=np.float64))
        correct += int((S.argmax(axis=1) == yc).sum())
    loss = total_loss / n
    return Metrics(loss, loss + l2_penalty(net, lam), correct / n)


def batch_cost(net: Network, X: NDArray, y: NDArray, lam: float, ops) -> float:
    """J of eq (20) on one mini-batch with *batch* BN statistics (what the gradients are of)."""
    cache = forward_train(net, X, y, ops)
    return float(cache.loss.mean(dtype=np.float64)) + l2_penalty(net, lam)


def predict(net: Network, X: NDArray, ops, chunk: int = EVAL_CHUNK) -> NDArray:
    """Predicted class of each row of X (test mode)."""
    return np.concatenate([forward_eval(net, X[s : s + chunk], ops).argmax(axis=1) for s in range(0, X.shape[0], chunk)])
