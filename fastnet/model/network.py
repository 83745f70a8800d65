"""The k-layer network: parameters, running BN statistics, forward and backward passes.

Written once over the ops of a backend (``ops`` = ``fastnet.backends.resolve(...).ops``); this
module never asks which backend it runs on. Rows are samples: a mini-batch X is (n, d) and
layer l has weights W_l of shape (m_l, m_{l-1}) as in the assignment.

Layers l = 1..k-1 are hidden: linear, then (with batch norm) normalise + scale-shift, then
ReLU; layer k is linear and feeds the softmax. With batch norm the hidden layers carry no bias
b_l: batch norm subtracts it away again (the assignment notes these biases are superfluous and
are learnt as zero), so dropping them changes neither the function nor the other gradients.

Parameter names are 1-based like the assignment: ``W1, b1, gamma1, beta1, ..., Wk, bk``.

Bonus variants (Exercise 4), each a *kind* of hidden layer (:func:`layer_kinds`):

* ``bn_relu`` -- the assignment's layer: s = W x (no bias), x = max(0, BN(s)), eqs (12)-(17);
* ``relu`` -- without batch norm: x = max(0, W x + b), eqs (1)-(2);
* ``relu_bn`` -- batch norm *after* the ReLU (4.1a): h = max(0, W x + b), x = BN(h); the bias
  is kept (BN no longer follows the linear map directly, so it does not cancel);
* ``mid`` -- the middle layer of a skip block (4.2c, eq 40): x = max(0, W x), no BN, no bias.

With skip connections, for l = 2, 4, ... (while l + 1 is a hidden layer) the scores of layer
l + 1 receive x^(l-1): s^(l+1) = W_{l+1} max(W_l x^(l-1), 0) + x^(l-1), eq (40), followed by
that layer's own activation, x^(l+1) = max(BN(s^(l+1)), 0) with batch norm, eq (41). The
backward pass adds dJ/ds^(l+1) to the gradient arriving at x^(l-1), the start of the skip.

Regularisers for long runs (issue 17; the arrays come from :mod:`fastnet.model.regularise`):

* soft targets -- ``forward_train``, ``backward`` and ``batch_cost`` take either labels y (n,)
  or targets T (n, K) whose rows are distributions (label smoothing, MixUp); the loss is then
  the cross-entropy against T and eq (21) reads G = P - T;
* dropout -- ``dropout=``, one mask D^(l) (n, m_l) per hidden layer, entries 0 or 1 / (1 - p):
  hidden layer l passes on x^(l) * D^(l) (after its activation), and the backward pass
  multiplies the gradient arriving at that output by the same D^(l). Test time has no masks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from fastnet.errors import ConfigError

INITS = ("he", "xavier", "normal")
PLACEMENTS = ("before", "after")  # batch norm before the ReLU (the assignment) or after it
KINDS = ("bn_relu", "relu_bn", "relu", "mid")
HAS_BIAS = {"bn_relu": False, "relu_bn": True, "relu": True, "mid": False}
HAS_BN = {"bn_relu": True, "relu_bn": True, "relu": False, "mid": False}
DEFAULT_EPS = 1e-8
DEFAULT_ALPHA = 0.9
EVAL_CHUNK = 1_000  # rows per forward pass in evaluation; the first-layer product of 1,000 rows is as
# efficient a GEMM as of 10,000 (a little more: the rows stay in cache) and a chunk of the test set,
# normalised as it is read (fastnet.data.images.NormalisedImages), takes 12 MB instead of 123 MB


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
    bn_placement: str = "before"  # "after": batch norm after the ReLU (Exercise 4.1a)
    skip: bool = False  # skip connections of eqs (40)-(41) (Exercise 4.2c)

    @property
    def k(self) -> int:
        return len(self.layers)

    def kinds(self) -> list[str]:
        """The kind of each hidden layer 1..k-1 (see the module docstring)."""
        return layer_kinds(self.k, self.bn, self.bn_placement, self.skip)

    def skips(self) -> dict[int, int]:
        """{l + 1: l - 1} for every skip block: layer l + 1's scores receive x^(l-1)."""
        return skip_pairs(self.k, self.skip)

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


def layer_kinds(k: int, bn: bool, bn_placement: str = "before", skip: bool = False) -> list[str]:
    """The kinds of the hidden layers 1..k-1 of a k-layer network (module docstring)."""
    ends = skip_pairs(k, skip)
    kinds = []
    for l in range(1, k):
        if skip and (l + 1) in ends:
            kinds.append("mid")  # eq (40): max(W_l x^(l-1), 0), no BN
        elif bn:
            kinds.append("bn_relu" if bn_placement == "before" else "relu_bn")
        else:
            kinds.append("relu")
    return kinds


def skip_pairs(k: int, skip: bool) -> dict[int, int]:
    """{end: start} of the skip connections of eq (40): for l = 2, 4, ... with l + 1 <= k - 1
    (the block ends at a hidden layer), layer l + 1 receives x^(l-1)."""
    return {l + 1: l - 1 for l in range(2, k - 1, 2)} if skip else {}


def check_architecture(sizes: list[int], bn: bool, bn_placement: str, skip: bool) -> None:
    """ConfigError for a batch-norm placement or skip structure the sizes do not allow.

    sizes = [d, m_1, ..., m_{k-1}, K]."""
    if bn_placement not in PLACEMENTS:
        raise ConfigError(f"unknown batch-norm placement {bn_placement!r}; choose one of {', '.join(PLACEMENTS)}")
    if bn_placement == "after" and not bn:
        raise ConfigError("batch norm after the ReLU needs batch norm; drop --bn-placement after or --no-bn")
    if skip:
        k = len(sizes) - 1
        pairs = skip_pairs(k, True)
        if not pairs:
            raise ConfigError(f"skip connections (eq 40) span hidden layers 1 to 3, 3 to 5, ...: they need at least 3 hidden layers, got {k - 1}")
        for end, start in sorted(pairs.items()):
            if sizes[start] != sizes[end]:
                raise ConfigError(f"a skip connection adds x^({start}) to s^({end}), so hidden layers {start} and {end} need equal widths, "
                                  f"got {sizes[start]} and {sizes[end]} (hidden {sizes[1:-1]}); e.g. make every hidden layer the same width")


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
    bn_placement: str = "before",
    skip: bool = False,
) -> Network:
    """A new network with weights drawn by ``init`` and biases, beta at 0, gamma at 1.

    init : "he" (std sqrt(2 / m_in)), "xavier" (std sqrt(1 / m_in)) or "normal" (std ``sigma``,
        the same at every layer, for the assignment's sensitivity-to-initialisation study).
    Weights are drawn in float64 and then cast, so float32 and float64 networks of one seed
    start from the same numbers. ``bn_placement`` and ``skip``: the bonus variants (module
    docstring); which layers have a bias, gamma and beta follows from each layer's kind.
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
    check_architecture(sizes, bn, bn_placement, skip)
    kinds = layer_kinds(len(sizes) - 1, bn, bn_placement, skip) + ["output"]
    layers = []
    for l in range(1, len(sizes)):
        m_in, m_out = sizes[l - 1], sizes[l]
        std = {"he": np.sqrt(2.0 / m_in), "xavier": np.sqrt(1.0 / m_in), "normal": sigma}[init]
        W = (std * rng.standard_normal((m_out, m_in))).astype(dtype)
        kind = kinds[l - 1]
        layer = Layer(W=W, b=np.zeros(m_out, dtype) if HAS_BIAS.get(kind, True) else None)
        if HAS_BN.get(kind, False):
            layer.gamma = np.ones(m_out, dtype)
            layer.beta = np.zeros(m_out, dtype)
        layers.append(layer)
    return Network(layers, bn=bn, eps=float(eps), alpha=float(alpha), init=init, sigma=sigma, bn_placement=bn_placement, skip=bool(skip))


# -------------------------------------------------------------------------------- forward


class LayerCache(NamedTuple):
    """What the backward pass needs of a hidden layer l (the assignment's stored batches)."""

    X: NDArray  # x^(l), the layer's output (for bn_relu / relu / mid layers its > 0 is the ReLU mask)
    S_hat: NDArray | None = None  # BN layers: normalised scores, eq (15)
    mu: NDArray | None = None  # BN layers: batch mean, eq (13)
    v: NDArray | None = None  # BN layers: batch variance, eq (14)
    H: NDArray | None = None  # relu_bn layers: the ReLU's output max(0, W x + b), BN's input
    D: NDArray | None = None  # dropout (issue 17): the mask, 0 or 1 / (1 - p) per entry
    X_D: NDArray | None = None  # dropout: X * D, what the layer passes on


def layer_output(lc: LayerCache) -> NDArray:
    """What a hidden layer passes on: x^(l), or x^(l) * D^(l) with dropout."""
    return lc.X if lc.D is None else lc.X_D


@dataclass
class Cache:
    """The forward pass of one mini-batch, kept for the backward pass."""

    X0: NDArray  # the input batch x^(0)
    hidden: list[LayerCache] = field(default_factory=list)
    P: NDArray | None = None  # softmax probabilities, eq (19)
    loss: NDArray | None = None  # per-sample cross-entropy


def _scores(l: int, layer: Layer, X: NDArray, outputs: list[NDArray], skips: dict[int, int], ops) -> NDArray:
    """W_l x^(l-1), plus x^(start) where a skip connection ends at l (eq 40). The bias, where
    the layer has one, is added by the activation op (bias_relu_forward)."""
    S = ops.linear_forward(X, layer.W)  # (1), (5), (12) without bias
    if l in skips:
        S += outputs[skips[l]]  # (40): + x^(l-2); S is a fresh array
    return S


def hidden_forward_train(net: Network, X: NDArray, ops, dropout: list[NDArray] | None = None) -> list[LayerCache]:
    """The hidden layers of the forward pass with batch statistics: eqs (12)-(17) / (1)-(2),
    and the bonus kinds; one LayerCache per hidden layer. ``dropout``: a mask per hidden layer
    (module docstring), applied to each layer's output."""
    caches: list[LayerCache] = []
    outputs = [X]  # x^(0), x^(1), ...
    skips = net.skips()
    for l, (layer, kind) in enumerate(zip(net.layers[:-1], net.kinds()), start=1):
        S = _scores(l, layer, X, outputs, skips, ops)
        if kind == "bn_relu":
            out = ops.bn_relu_forward_train(S, layer.gamma, layer.beta, net.eps)  # (13)-(17)
            lc = LayerCache(out.X, out.S_hat, out.mu, out.v)
        elif kind == "relu_bn":
            H = ops.bias_relu_forward(S, layer.b)  # max(0, s)
            out = ops.bn_forward_train(H, layer.gamma, layer.beta, net.eps)  # (13)-(16) on max(0, s)
            lc = LayerCache(out.X, out.S_hat, out.mu, out.v, H)
        elif kind == "relu":
            lc = LayerCache(ops.bias_relu_forward(S, layer.b))  # (1), (2)
        else:  # mid
            lc = LayerCache(ops.bias_relu_forward(S, np.zeros(S.shape[1], S.dtype)))  # (40): max(W_l x, 0)
        if dropout is not None:  # inverted dropout (issue 17): x^(l) * D^(l)
            lc = lc._replace(D=dropout[l - 1], X_D=lc.X * dropout[l - 1])
        caches.append(lc)
        X = layer_output(lc)
        outputs.append(X)
    return caches


def forward_train(net: Network, X: NDArray, y: NDArray, ops, *, dropout: list[NDArray] | None = None) -> Cache:
    """Forward pass with batch statistics: eqs (12)-(19) with BN, (1)-(4) without.

    ``y``: labels (n,), or soft targets T (n, K); ``dropout``: a mask per hidden layer (module
    docstring)."""
    cache = Cache(X0=X, hidden=hidden_forward_train(net, X, ops, dropout))
    X = layer_output(cache.hidden[-1]) if cache.hidden else X
    last = net.layers[-1]
    S = ops.linear_forward(X, last.W, last.b)  # (18)
    if soft_targets(y):
        cache.P, cache.loss = ops.softmax_xent_soft(S, y)  # (19) and the cross-entropy against T
    else:
        cache.P, cache.loss = ops.softmax_xent(S, y)  # (19) and l_cross
    return cache


def soft_targets(y: NDArray) -> bool:
    """Whether ``y`` holds soft targets T (n, K), rather than labels (n,)."""
    return np.ndim(y) == 2


def forward_eval(net: Network, X: NDArray, ops) -> NDArray:
    """Scores s (n, K) at test time, BN with the running averages: eqs (5)-(11) / (1)-(3)."""
    outputs = [X]
    skips = net.skips()
    for l, (layer, kind) in enumerate(zip(net.layers[:-1], net.kinds()), start=1):
        if HAS_BN[kind] and layer.mu_av is None:
            raise ConfigError("the network has no running BN statistics yet; train it for at least one step")
        S = _scores(l, layer, X, outputs, skips, ops)  # (5)
        if kind == "bn_relu":
            X = ops.bn_relu_forward_eval(S, layer.gamma, layer.beta, layer.mu_av, layer.v_av, net.eps)  # (6)-(8)
        elif kind == "relu_bn":
            X = ops.bn_forward_eval(ops.bias_relu_forward(S, layer.b), layer.gamma, layer.beta, layer.mu_av, layer.v_av, net.eps)
        elif kind == "relu":
            X = ops.bias_relu_forward(S, layer.b)  # (1), (2)
        else:  # mid
            X = ops.bias_relu_forward(S, np.zeros(S.shape[1], S.dtype))  # (40)
        outputs.append(X)
    last = net.layers[-1]
    return ops.linear_forward(X, last.W, last.b)  # (9)


def update_running_stats(net: Network, cache: Cache) -> None:
    """Exponential moving averages of the batch means and variances, eqs (38)-(39).

    The first batch initialises the averages, as the assignment suggests. Layers without
    batch norm (``mid`` layers of skip blocks) have none.
    """
    for layer, lc in zip(net.layers, cache.hidden):
        if lc.mu is None:
            continue
        layer.mu_av = running_average(layer.mu_av, lc.mu, net.alpha)  # (38)
        layer.v_av = running_average(layer.v_av, lc.v, net.alpha)  # (39)


def running_average(avg: NDArray | None, batch: NDArray, alpha: float) -> NDArray:
    """One step of eq (38) or (39): ``avg <- alpha avg + (1 - alpha) batch``, in place, and
    returned; ``avg`` None (no batch seen yet): a copy of ``batch`` (the first batch
    initialises the average). The lock-step loop's stacked first layers go through here too."""
    if avg is None:
        return batch.copy()
    avg *= alpha
    avg += (1 - alpha) * batch
    return avg


# ------------------------------------------------------------------------------- backward


def backward(net: Network, cache: Cache, y: NDArray, lam: float, ops, *, dX0_out: NDArray | None = None) -> dict[str, NDArray]:
    """Gradients of the mini-batch cost J (eq 20) for every parameter: eqs (21)-(37).

    Returns a dict with the names of :meth:`Network.params`. ``dX0_out``, if given, receives
    the gradient of the input batch as the ops pass gradients down, ``G W_1`` (eq 23: of the
    per-sample losses, i.e. n dJ/dx^(0)); only a network fed by another's outputs needs it
    (:mod:`fastnet.training.lockstep` trains layers 2..k so).

    Skip connections: where layer e's scores received x^(s) (eq 40), dJ/ds^(e) is also a
    gradient of x^(s); it is kept in ``pending[s]`` and added to what layer s + 1's linear map
    sends back to x^(s), before layer s's own activation is differentiated.

    ``y``: the labels or soft targets the forward pass was given; dropout masks are in the cache.
    """
    grads: dict[str, NDArray] = {}
    if soft_targets(y):
        G = ops.softmax_xent_soft_backward(cache.P, y)  # (21) with T for Y: P - T
    else:
        G = ops.softmax_xent_backward(cache.P, y)  # (21)
    inputs = [cache.X0] + [layer_output(lc) for lc in cache.hidden]  # x^(0), ..., x^(k-1) (with dropout: x * D)
    kinds = net.kinds()
    skips = net.skips()
    pending: dict[int, NDArray] = {}
    for l in range(net.k, 0, -1):
        layer = net.layers[l - 1]
        g = ops.linear_backward(G, inputs[l - 1], layer.W, lam, need_dX=l > 1 or dX0_out is not None)  # (22)/(28), (23)/(29)
        grads[f"W{l}"] = g.dW
        if layer.b is not None:
            grads[f"b{l}"] = g.db
        if l in skips:
            pending[skips[l]] = G  # dJ/dx^(start) gets dJ/ds^(l) too: s^(l) = ... + x^(start)
        if l == 1:
            if dX0_out is not None:
                dX0_out[...] = g.dX
            break
        dX = g.dX
        if l - 1 in pending:
            dX = dX + pending.pop(l - 1)
        below, lower, kind = cache.hidden[l - 2], net.layers[l - 2], kinds[l - 2]  # layer l-1
        if below.D is not None:
            dX = dX * below.D  # dropout (issue 17): back through x * D, to the activation's output
        if kind == "bn_relu":
            bg = ops.bn_relu_backward(dX, below.X, below.S_hat, lower.gamma, below.v, net.eps)  # (24)-(27), (30)-(37)
            grads[f"gamma{l - 1}"], grads[f"beta{l - 1}"] = bg.dgamma, bg.dbeta
            G = bg.G
        elif kind == "relu_bn":
            bg = ops.bn_backward(dX, below.S_hat, lower.gamma, below.v, net.eps)  # (25)-(27), (31)-(37)
            grads[f"gamma{l - 1}"], grads[f"beta{l - 1}"] = bg.dgamma, bg.dbeta
            G = ops.relu_backward(bg.G, below.H)  # the ReLU before BN
        else:  # relu, mid
            G = ops.relu_backward(dX, below.X)  # (24)/(30)
    return grads


# ---------------------------------------------------------------------------- evaluation


class Metrics(NamedTuple):
    loss: float  # mean cross-entropy
    cost: float  # loss + lam * sum ||W||^2, eq (20)
    accuracy: float  # fraction correct


def l2_penalty(net: Network, lam: float) -> float:
    """lam * sum_l ||W_l||^2, the regularisation term of eq (20), in float64.

    Summed by NumPy's pairwise sum, not ``np.dot``: BLAS splits a long dot product over its
    threads, so its last bits would depend on the thread count of the run."""
    total = 0.0
    for layer in net.layers:
        w = np.ravel(layer.W).astype(np.float64)  # row-major order whatever W's layout
        total += float(np.square(w).sum())
    return lam * total


def _for_eval(net: Network) -> Network:
    """``net`` with C-contiguous weight matrices, the same arrays where they already are.

    The ops copy a non-contiguous matrix on every call, and a network being trained by the
    fused step (fastnet.training.fused) holds W_1 as the transpose of a (d, m_1) array: evaluation
    copies it once here instead of once per chunk. The values, and so the scores, are the same.
    """
    if all(layer.W.flags.c_contiguous for layer in net.layers):
        return net
    from dataclasses import replace

    return replace(net, layers=[layer if layer.W.flags.c_contiguous else replace(layer, W=np.ascontiguousarray(layer.W)) for layer in net.layers])


def evaluate(net: Network, X: NDArray, y: NDArray, lam: float, ops, chunk: int = EVAL_CHUNK, *, rows: NDArray | None = None, threads: int = 1,
             views=None) -> Metrics:
    """Loss, cost and accuracy of the network in test mode (running BN statistics).

    X is read ``chunk`` rows at a time: an (n, d) array, or anything whose row slices are
    arrays (the test set of :func:`fastnet.data.cifar10.load_cifar10` is normalised as it is read).
    Per-sample losses are summed in float64, chunk by chunk in order. ``chunk`` changes the
    figures by float rounding at most (BLAS may round a row's product differently in blocks
    of another size).

    ``views`` (issue 17, test-time augmentation; :func:`fastnet.data.augment.tta_views`):
    ``views(Xc)`` gives versions of a chunk's rows; the prediction of a row is then the mean
    of its softmax probabilities over them, and its loss -log of that mean at the label.

    ``rows`` (integer indices, optional): measure only these rows of X and y -- the figures
    of ``evaluate(net, X[rows], y[rows], ...)`` -- gathered a chunk at a time into a reused
    buffer, so the subset is never copied whole (10,000 CIFAR-10 images are 123 MB in float32).

    ``threads``: chunks run on this many threads at once, for callers that hold BLAS to one
    thread and have cores to spare (fit's two-core step does); the first-layer product, most
    of the time, releases the GIL. The figures are the same bits as on one thread: each chunk
    is computed alike and their sums are added in chunk order.
    """
    import threading

    n = X.shape[0]
    if rows is not None:
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
            raise IndexError(f"evaluate: rows must be a 1-D array of indices in 0..{n - 1}")
        n = len(rows)
    net = _for_eval(net)
    gather = rows is not None and isinstance(X, np.ndarray)
    buffers = threading.local()  # a gather buffer per thread

    def figures(start: int) -> tuple[float, int]:
        """(sum of the losses, number correct) of the chunk at ``start``."""
        if rows is None:
            Xc, yc = X[start : start + chunk], y[start : start + chunk]
        else:
            idx = rows[start : start + chunk]
            if gather:
                buf = getattr(buffers, "buf", None)
                if buf is None:
                    buf = buffers.buf = np.empty((min(chunk, n), X.shape[1]), X.dtype)
                # mode="clip" (the indices are checked above): numpy buffers out= in mode "raise"
                Xc = np.take(X, idx, axis=0, out=buf[: len(idx)], mode="clip")
            else:
                Xc = X[idx]
            yc = y[idx]
        if views is not None:
            P = averaged_probabilities(net, views(Xc), ops)
            loss = -np.log(np.maximum(P[np.arange(len(yc)), yc], np.finfo(np.float64).tiny))
            return float(loss.sum()), int(np.count_nonzero(P.argmax(axis=1) == yc))
        S = forward_eval(net, Xc, ops)
        return float(ops.softmax_xent(S, yc).loss.sum(dtype=np.float64)), int(np.count_nonzero(S.argmax(axis=1) == yc))

    starts = range(0, n, chunk)
    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(starts)), thread_name_prefix="fastnet-eval") as pool:
            parts = list(pool.map(figures, starts))
    else:
        parts = [figures(start) for start in starts]
    total_loss = 0.0
    correct = 0
    for part_loss, part_correct in parts:
        total_loss += part_loss
        correct += part_correct
    loss = total_loss / n
    return Metrics(loss, loss + l2_penalty(net, lam), correct / n)


def batch_cost(net: Network, X: NDArray, y: NDArray, lam: float, ops, *, dropout: list[NDArray] | None = None) -> float:
    """J of eq (20) on one mini-batch with *batch* BN statistics (what the gradients are of);
    ``y`` labels or soft targets, ``dropout`` fixed masks, as :func:`forward_train` takes them."""
    cache = forward_train(net, X, y, ops, dropout=dropout)
    return float(cache.loss.mean(dtype=np.float64)) + l2_penalty(net, lam)


def averaged_probabilities(net: Network, versions, ops) -> NDArray:
    """The softmax probabilities of each row, float64, averaged over ``versions`` (arrays of
    the same rows: test-time augmentation's views), in order."""
    total = None
    for Xv in versions:
        S = forward_eval(net, Xv, ops)
        P = np.exp(S - S.max(axis=1, keepdims=True), dtype=np.float64)
        P /= P.sum(axis=1, keepdims=True)
        total = P if total is None else total + P
    return total / len(versions)


def predict(net: Network, X: NDArray, ops, chunk: int = EVAL_CHUNK, *, views=None) -> NDArray:
    """Predicted class of each row of X (test mode); X is read ``chunk`` rows at a time, as in
    :func:`evaluate`; ``views``: test-time augmentation, as there."""
    net = _for_eval(net)

    def classes(Xc: NDArray) -> NDArray:
        return (forward_eval(net, Xc, ops) if views is None else averaged_probabilities(net, views(Xc), ops)).argmax(axis=1)

    return np.concatenate([classes(X[s : s + chunk]) for s in range(0, X.shape[0], chunk)])
