"""The peers fastnet is measured against, and fastnet itself, all driven the same way.

Every implementation here trains the same network with the same recipe on the same epoch:

* the same initial parameters (fastnet's ``init_network``, copied into each peer);
* the same mini-batches, gathered row by row from one shuffled permutation of the training
  set (``Plan.perm``), and the same cyclic learning rate per step (``Plan.etas``, from
  ``fastnet.model.optim.cyclic_lr``);
* float32 everywhere; batch norm with the *biased* batch variance in training, running
  averages with decay ``alpha`` (PyTorch momentum = 1 - alpha) initialised from the first
  batch; L2 on the weight matrices only, as eq (20): the gradient gets ``2 lam W``;
* plain SGD, one update per mini-batch; nothing evaluated during the epoch;
* with ``Spec.augment``, each batch flipped and translated (up to 3 pixels) by the draws of
  fastnet's ``--augment`` for step j (``fastnet.training.stepper.ImageAugment``): fastnet
  applies them in its fused step's gather, PyTorch gets ``augment_batch``'s NumPy copy, the
  vectorised per-batch augmentation a PyTorch user on the CPU would write.

Implementations (each ``Impl``: ``reset(init)``, ``step(Xb, yb, eta)``, ``epoch(X, y, plan)``,
``params()``):

``FastnetImpl(backend)``
    ``fastnet.training.stepper.train_step`` on ``X[idx]`` for every batch of the plan: ``fit``'s inner
    loop without its history, progress bar and checkpoints.
``TorchImpl``
    What a PyTorch user writes: ``nn.Sequential`` of ``Linear(bias=not bn)``,
    ``BatchNorm1d(eps, momentum=1 - alpha)``, ``ReLU``; ``CrossEntropyLoss``;
    ``torch.optim.SGD`` with two parameter groups, ``weight_decay=2 lam`` for the weight
    matrices and 0 for biases, gamma and beta (eq 20 regularises only W); the learning rate
    set on the groups before every step; ``Xt[idx]`` gathers the batch from a tensor that
    shares the NumPy array's memory. ``BatchNorm1d`` normalises with the biased variance, as
    fastnet, but keeps the *unbiased* one in ``running_var`` (a factor n / (n - 1) on the
    running average only; training is unaffected). Its first step uses momentum 1, so the
    running averages start from the first batch as fastnet's do.
``JaxImpl``
    The whole epoch is one ``jax.jit`` function: ``lax.scan`` over the batches, each step a
    ``jnp.take`` gather, forward, ``jax.value_and_grad`` of the cost of eq (20) (the L2 term
    in the cost, so its gradient is 2 lam W), SGD update and running averages. Compilation
    happens on the first call for a plan length; callers warm up first (``warmup``).
``FloorImpl(layout)``
    Only the matrix products a training step cannot avoid: for every layer the forward
    product, the weight gradient, and (every layer but the first) the input gradient, into
    preallocated float32 arrays with ``np.matmul(..., out=...)``. The input of the first
    layer is a contiguous block of rows of the data set (the block that holds the batch's
    first row: no gather, which ``gather_seconds`` counts apart); the other operands hold fixed values (a product's speed does not
    depend on them). ``LAYOUTS`` lists the memory orientations it can run in.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fastnet.model.network import init_network
from fastnet.model.optim import cyclic_lr

THREE = (50, 50)
NINE = (50, 30, 20, 20, 10, 10, 10, 10)
WIDE = (1024, 512, 256)  # the bonus presets' and best-mlp's network
N_TRAIN = 45_000
D = 3072
K = 10


@dataclass(frozen=True)
class Spec:
    """The network and recipe (the defaults are fastnet's: assignment 3, exercise 3)."""

    hidden: tuple[int, ...] = THREE
    bn: bool = True
    d: int = D
    K: int = K
    batch: int = 100
    lam: float = 0.005
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 2250
    alpha: float = 0.9
    eps: float = 1e-8
    augment: bool = False  # flips and 3-pixel translations of every batch (fastnet's --augment)

    def augmenter(self):
        """fastnet's augmentation of step j (seed 0, 3 pixels), or None."""
        from fastnet.training.stepper import ImageAugment

        return ImageAugment(seed=0, shift=3) if self.augment else None

    @property
    def sizes(self) -> list[int]:
        return [self.d, *self.hidden, self.K]

    @property
    def label(self) -> str:
        return f"{len(self.hidden) + 1}-layer {'BN' if self.bn else 'no BN'}" + (" + augmentation" if self.augment else "")


def make_data(n: int = N_TRAIN, d: int = D, k: int = K, seed: int = 0) -> tuple[NDArray, NDArray]:
    """A synthetic training set: (n, d) float32 standard normal rows and int64 labels.

    Speed does not depend on pixel values; normalised CIFAR-10 has zero mean and unit
    variance per feature, like these.
    """
    rng = np.random.default_rng([seed, 7])
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.integers(0, k, n, dtype=np.int64)
    return X, y


@dataclass
class Plan:
    """One epoch: which rows make each batch, and the learning rate of each step."""

    perm: NDArray  # (n_batches * batch,) int64 row indices, from one permutation
    etas: NDArray  # (n_batches,) float64
    batch: int

    @property
    def n_batches(self) -> int:
        return len(self.etas)

    def idx(self, j: int) -> NDArray:
        return self.perm[j * self.batch : (j + 1) * self.batch]


def make_plan(spec: Spec, n_train: int, n_batches: int | None = None, seed: int = 0, t0: int = 0) -> Plan:
    """A shuffled epoch of ``n_batches`` (default: all, n_train // batch) batches from step t0."""
    per_epoch = n_train // spec.batch
    n_batches = per_epoch if n_batches is None else max(1, min(int(n_batches), per_epoch))
    perm = np.random.default_rng([seed, 2]).permutation(n_train)[: n_batches * spec.batch]
    etas = np.array([cyclic_lr(t0 + j, spec.eta_min, spec.eta_max, spec.n_s) for j in range(n_batches)])
    return Plan(perm.astype(np.int64), etas, spec.batch)


def initial_network(spec: Spec, seed: int = 0):
    """fastnet's He-initialised float32 network for ``spec``: every implementation starts here."""
    return init_network(spec.d, spec.hidden, spec.K, bn=spec.bn, init="he", dtype=np.float32,
                        eps=spec.eps, alpha=spec.alpha, rng=np.random.default_rng([seed, 1]))


def fastnet_params(net) -> dict[str, NDArray]:
    """Copies of a fastnet network's parameters and running averages, by fastnet's names."""
    return {k: v.copy() for k, v in {**net.params(), **net.running_stats()}.items()}


class Impl:
    """An implementation of the training epoch. ``name`` is what the tables call it."""

    name = "?"

    def reset(self, init) -> None:  # pragma: no cover - interface
        """Start again from the fastnet network ``init`` (copied, never modified)."""
        raise NotImplementedError

    def step(self, Xb: NDArray, yb: NDArray, eta: float) -> None:  # pragma: no cover
        raise NotImplementedError

    def epoch(self, X: NDArray, y: NDArray, plan: Plan) -> None:
        for j in range(plan.n_batches):
            idx = plan.idx(j)
            self.step(X[idx], y[idx], float(plan.etas[j]))

    def warmup(self, X: NDArray, y: NDArray, plan: Plan) -> None:
        """Whatever must happen once before timing (JIT compilation, caches)."""
        self.epoch(X, y, Plan(plan.perm[: 5 * plan.batch], plan.etas[:5], plan.batch))

    def sync(self) -> None:
        """Wait for asynchronous work (JAX dispatch) to finish."""

    def params(self) -> dict[str, NDArray]:  # pragma: no cover
        raise NotImplementedError


# ------------------------------------------------------------------------------ fastnet


class FastnetImpl(Impl):
    def __init__(self, spec: Spec, backend: str = "auto", precision: str = "fp32", gemm: str = "auto"):
        from fastnet.backends import resolve

        self.spec = spec
        self.backend = resolve(backend)
        self.ops = self.backend.ops
        self.precision = precision  # bf16: the fused step's first-layer products (--precision bf16)
        self.gemm = gemm  # the fused step's matrix-multiply provider (--gemm), resolved as fit resolves it
        self.name = f"fastnet-{backend}" + ("-bf16" if precision == "bf16" else "") + ("" if gemm == "auto" else f"[{gemm}]")
        self.net = None

    def reset(self, init) -> None:
        self.net = copy.deepcopy(init)

    def step(self, Xb, yb, eta):
        from fastnet.training.stepper import train_step

        train_step(self.net, Xb, yb, self.spec.lam, eta, self.ops)

    def epoch(self, X, y, plan):
        self.epochs(X, y, plan, 1)

    def epochs(self, X, y, plan, count: int) -> None:
        """``count`` epochs of ``plan`` through one stepper, as fit runs them (its load guard
        and buffers live for the whole run)."""
        from fastnet.training.stepper import Stepper

        # What fit runs for each step (the fused step where the backend has one).
        stepper = Stepper(self.net, X, y, self.spec.lam, self.ops, augment=self.spec.augmenter(), bf16=self.precision == "bf16")
        try:
            self._use_gemm(stepper)
            for _ in range(count):
                for j in range(plan.n_batches):
                    stepper(plan.idx(j), float(plan.etas[j]), j, plan.idx(j + 1) if j + 1 < plan.n_batches else None)
        finally:
            stepper.close()

    def _use_gemm(self, stepper) -> None:
        """The provider fit would hand this network's fused step for ``--gemm self.gemm``."""
        from fastnet.training.config import TrainConfig
        from fastnet.training.loop import use_gemm

        cfg = TrainConfig(hidden=list(self.spec.hidden), batch=self.spec.batch, gemm=self.gemm, precision=self.precision).validate()
        use_gemm(stepper, cfg, None)
        self.resolved = getattr(stepper.fused, "gemm", None)

    def params(self):
        return fastnet_params(self.net)


# -------------------------------------------------------------------------------- torch


def torch_available() -> str | None:
    """None when PyTorch imports, else the reason it does not."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return f"PyTorch not installed ({exc}); pip install torch==2.13.0"
    return None


class TorchImpl(Impl):
    """PyTorch eager; ``bf16``: every Linear under CPU autocast to bfloat16 (torch.autocast
    ("cpu", torch.bfloat16): bf16 inputs to each matrix product, float32 weights and
    optimiser), PyTorch's own mixed precision, to set beside fastnet's --precision bf16."""

    name = "torch"

    def __init__(self, spec: Spec, threads: int | None = None, bf16: bool = False):
        import torch
        from torch import nn

        self.torch, self.spec, self.threads, self.bf16 = torch, spec, threads, bf16
        if bf16:
            self.name = "torch-bf16"
        if threads:
            torch.set_num_threads(threads)
        sizes = spec.sizes
        mods: list = []
        self.linears, self.bns = [], []
        for l in range(1, len(sizes)):
            hidden = l < len(sizes) - 1
            lin = nn.Linear(sizes[l - 1], sizes[l], bias=not (hidden and spec.bn))
            mods.append(lin)
            self.linears.append(lin)
            if hidden:
                if spec.bn:
                    bn = nn.BatchNorm1d(sizes[l], eps=spec.eps, momentum=1 - spec.alpha)
                    mods.append(bn)
                    self.bns.append(bn)
                mods.append(nn.ReLU())
        self.model = nn.Sequential(*mods).train()
        decay = [lin.weight for lin in self.linears]
        rest = [p for p in self.model.parameters() if all(p is not w for w in decay)]
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": 2 * spec.lam},
                                    {"params": rest, "weight_decay": 0.0}], lr=spec.eta_min, momentum=0.0)
        self.loss_fn = nn.CrossEntropyLoss()
        self.fresh = True

    def reset(self, init) -> None:
        torch = self.torch
        with torch.no_grad():
            for lin, layer in zip(self.linears, init.layers):
                lin.weight.copy_(torch.from_numpy(layer.W))
                if lin.bias is not None:
                    lin.bias.copy_(torch.from_numpy(layer.b))
            for bn, layer in zip(self.bns, init.layers):
                bn.weight.copy_(torch.from_numpy(layer.gamma))
                bn.bias.copy_(torch.from_numpy(layer.beta))
                bn.reset_running_stats()
        self.fresh = init.layers[0].mu_av is None

    def _step(self, xb, yb, eta):
        if self.fresh:  # the running averages start from the first batch, as fastnet's
            for bn in self.bns:
                bn.momentum = 1.0
        for g in self.opt.param_groups:
            g["lr"] = eta
        self.opt.zero_grad(set_to_none=True)
        with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.opt.step()
        if self.fresh:
            for bn in self.bns:
                bn.momentum = 1 - self.spec.alpha
            self.fresh = False
        return loss

    def step(self, Xb, yb, eta):
        if self.threads:
            self.torch.set_num_threads(self.threads)
        self._step(self.torch.from_numpy(Xb), self.torch.from_numpy(yb), eta)

    def epoch(self, X, y, plan):
        torch = self.torch
        if self.threads:
            torch.set_num_threads(self.threads)
        Xt, yt, perm = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(plan.perm)
        B = plan.batch
        augment = self.spec.augmenter()
        for j in range(plan.n_batches):
            idx = perm[j * B : (j + 1) * B]
            xb = Xt[idx] if augment is None else torch.from_numpy(augment(X[plan.idx(j)], j))
            self._step(xb, yt[idx], float(plan.etas[j]))

    def params(self):
        out = {}
        n = self.spec.batch
        for l, lin in enumerate(self.linears, start=1):
            out[f"W{l}"] = lin.weight.detach().numpy().copy()
            if lin.bias is not None:
                out[f"b{l}"] = lin.bias.detach().numpy().copy()
        for l, bn in enumerate(self.bns, start=1):
            out[f"gamma{l}"] = bn.weight.detach().numpy().copy()
            out[f"beta{l}"] = bn.bias.detach().numpy().copy()
            if not self.fresh:
                out[f"mu_av{l}"] = bn.running_mean.numpy().copy()
                # running_var holds unbiased variances: back to the biased ones of eq (14)
                out[f"v_av{l}"] = bn.running_var.numpy() * np.float32((n - 1) / n)
        return out


# ---------------------------------------------------------------------------------- JAX


def jax_available() -> str | None:
    try:
        import jax  # noqa: F401
    except ImportError as exc:
        return f"JAX not installed ({exc}); pip install jax jaxlib"
    return None


def _jax_epoch_fn(spec: Spec):
    """The jitted epoch: (params, stats, X, y, idx (nb, B), etas (nb,)) -> (params, stats, losses)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    k = len(spec.hidden) + 1
    eps, alpha, lam = np.float32(spec.eps), np.float32(spec.alpha), np.float32(spec.lam)

    def cost(params, xb, yb):
        batch_stats = []
        h = xb
        for l in range(1, k):
            s = h @ params[f"W{l}"].T  # (12) / (1)
            if spec.bn:
                mu = jnp.mean(s, axis=0)  # (13)
                v = jnp.mean(jnp.square(s - mu), axis=0)  # (14), biased
                s = (s - mu) / jnp.sqrt(v + eps)  # (15)
                s = params[f"gamma{l}"] * s + params[f"beta{l}"]  # (16)
                batch_stats.append((mu, v))
            else:
                s = s + params[f"b{l}"]
            h = jnp.maximum(s, 0)  # (17) / (2)
        s = h @ params[f"W{k}"].T + params[f"b{k}"]  # (18)
        logp = jax.nn.log_softmax(s, axis=1)  # (19)
        loss = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
        l2 = sum(jnp.sum(jnp.square(params[f"W{l}"])) for l in range(1, k + 1))
        return loss + lam * l2, (loss, batch_stats)  # eq (20)

    grad_fn = jax.value_and_grad(cost, has_aux=True)

    def epoch(params, stats, X, y, idx, etas):
        def step(carry, inp):
            params, stats = carry
            rows, eta = inp
            xb = jnp.take(X, rows, axis=0)  # the gather, inside the compiled epoch
            yb = jnp.take(y, rows, axis=0)
            (_, (loss, batch_stats)), grads = grad_fn(params, xb, yb)
            params = {name: p - eta * grads[name] for name, p in params.items()}
            if spec.bn:
                a = jnp.where(stats["started"], alpha, np.float32(0))  # first batch: taken whole
                new = {"started": jnp.array(True)}
                for l, (mu, v) in enumerate(batch_stats, start=1):
                    new[f"mu_av{l}"] = a * stats[f"mu_av{l}"] + (1 - a) * mu  # (38)
                    new[f"v_av{l}"] = a * stats[f"v_av{l}"] + (1 - a) * v  # (39)
                stats = new
            return (params, stats), loss

        (params, stats), losses = lax.scan(step, (params, stats), (idx, etas))
        return params, stats, losses

    return jax.jit(epoch, donate_argnums=(0, 1))


class JaxImpl(Impl):
    name = "jax"

    def __init__(self, spec: Spec):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.spec = jax, jnp, spec
        self.fn = _jax_epoch_fn(spec)
        self._data_key = None
        self.params_, self.stats = None, None

    def reset(self, init) -> None:
        jnp = self.jnp
        p = {k: jnp.asarray(v) for k, v in init.params().items()}
        stats = {"started": jnp.array(init.layers[0].mu_av is not None)}
        if self.spec.bn:
            for l, layer in enumerate(init.layers[:-1], start=1):
                m = layer.W.shape[0]
                stats[f"mu_av{l}"] = jnp.asarray(layer.mu_av if layer.mu_av is not None else np.zeros(m, np.float32))
                stats[f"v_av{l}"] = jnp.asarray(layer.v_av if layer.v_av is not None else np.zeros(m, np.float32))
        self.params_, self.stats = p, stats

    def _device_data(self, X, y):
        if self._data_key is None or self._data_key[0] is not X or self._data_key[1] is not y:
            self._X, self._y = self.jax.device_put(X), self.jax.device_put(y.astype(np.int32))
            self._data_key = (X, y)  # the host arrays themselves: an id could be reused
        return self._X, self._y

    def epoch(self, X, y, plan):
        Xd, yd = self._device_data(X, y)
        idx = self.jnp.asarray(plan.perm.astype(np.int32).reshape(plan.n_batches, plan.batch))
        etas = self.jnp.asarray(plan.etas.astype(np.float32))
        self.params_, self.stats, losses = self.fn(self.params_, self.stats, Xd, yd, idx, etas)
        self.last_losses = losses

    def step(self, Xb, yb, eta):
        self.epoch(Xb, yb, Plan(np.arange(len(yb), dtype=np.int64), np.array([eta]), len(yb)))
        self.sync()

    def warmup(self, X, y, plan):
        """Compile for this plan's length (and run it once): timing then excludes compilation."""
        self.epoch(X, y, plan)
        self.sync()

    def sync(self):
        self.jax.block_until_ready((self.params_, self.stats))

    def params(self):
        self.sync()
        out = {k: np.asarray(v) for k, v in self.params_.items()}
        if self.spec.bn and bool(self.stats["started"]):
            out.update({k: np.asarray(v) for k, v in self.stats.items() if k != "started"})
        return out


# -------------------------------------------------------------------------------- floor

# Memory orientations of the floor. "rows": activations and gradients are (n, m) (samples
# are rows, fastnet's layout); "cols": they are (m, n) (the assignment's). "W(out,in)" stores
# W_l as (m_out, m_in) (fastnet, PyTorch), "W(in,out)" as (m_in, m_out). The input batch is
# always rows (the data set is (n, d)); in "cols" layouts the first layer reads it as X0.T.
LAYOUTS = ("rows/W(out,in)", "rows/W(in,out)", "cols/W(out,in)", "cols/W(in,out)")


def cblas_matmul(tab):
    """``mm(A, B, out)``: out = A B by a provider's float32 CBLAS gemm (its table, as
    ``gemm_choice.table`` or :func:`threaded_mkl` gives it; called through
    ``gemm_choice.gemm_caller``), for the floor on another library than NumPy's. A and B may be
    transposed views of C-contiguous arrays (the floor's layouts); ``out`` is C-contiguous."""
    from fastnet.backends import gemm_choice

    call = gemm_choice.gemm_caller(tab, np.float32)

    def stored(a):  # (the C-contiguous array, whether a is its transpose)
        return (a, False) if a.flags.c_contiguous else (a.T, True)

    def mm(A, B, out):
        (a, ta), (b, tb) = stored(A), stored(B)
        call(a, ta, b, out, 1.0, 0.0, trans_b=tb)
        return out

    return mm


def mkl_available() -> str | None:
    """None if Intel MKL is installed (the floor on MKL), else why not."""
    from fastnet.backends import providers

    if providers.mkl_library_path() is None:
        return "Intel MKL not installed; pip install 'fastnet[mkl]'"
    return None


def threaded_mkl(threads: int):
    """Intel MKL's gemm table (``cblas_sgemm``, ``cblas_dgemm``, 32-bit integers) on MKL's own
    OpenMP threads (``threads`` of them), or None without MKL: the floor of the products on MKL
    at its best on this thread count. For a process of its own: fastnet runs MKL sequential (one
    product per calling thread, fastnet/backends/providers.py), and MKL takes its threading
    layer once per process."""
    import ctypes

    from fastnet.backends import providers

    path = providers.mkl_library_path()
    if path is None:
        return None
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    lib.MKL_Set_Threading_Layer(0)  # mkl_service.h: MKL_THREADING_INTEL (the wheel's libiomp5)
    lib.MKL_Set_Num_Threads(threads)
    return tuple(ctypes.cast(f, ctypes.c_void_p).value for f in (lib.cblas_sgemm, lib.cblas_dgemm)) + (0,)


def _layer_products(layout: str, W, G, S, dW, dX, mm=np.matmul):
    """The (up to) three products of one layer in ``layout``, as closures over fixed arrays,
    by ``mm(A, B, out=C)`` (NumPy's matmul; :func:`cblas_matmul` for another library's).

    Canonical meaning (rows, W (m_out, m_in)): S = X W^T, dW = G^T X, dX = G W. In other
    layouts the same numbers are computed with operands/outputs stored transposed.
    """
    if layout == "rows/W(out,in)":
        fwd = lambda X: mm(X, W.T, out=S)  # noqa: E731
        dw = lambda X: mm(G.T, X, out=dW)  # noqa: E731
        dx = lambda: mm(G, W, out=dX)  # noqa: E731
    elif layout == "rows/W(in,out)":  # W, dW stored (m_in, m_out)
        fwd = lambda X: mm(X, W, out=S)  # noqa: E731
        dw = lambda X: mm(X.T, G, out=dW)  # noqa: E731
        dx = lambda: mm(G, W.T, out=dX)  # noqa: E731
    elif layout == "cols/W(out,in)":  # X, S, G, dX stored (m, n)
        fwd = lambda X: mm(W, X, out=S)  # noqa: E731
        dw = lambda X: mm(G, X.T, out=dW)  # noqa: E731
        dx = lambda: mm(W.T, G, out=dX)  # noqa: E731
    elif layout == "cols/W(in,out)":
        fwd = lambda X: mm(W.T, X, out=S)  # noqa: E731
        dw = lambda X: mm(X, G.T, out=dW)  # noqa: E731
        dx = lambda: mm(W, G, out=dX)  # noqa: E731
    else:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return fwd, dw, dx


def _store(layout: str, a: NDArray, kind: str) -> NDArray:
    """``a`` in canonical orientation (rows; W as (m_out, m_in)) stored as ``layout`` wants."""
    rows, w_out_in = layout.startswith("rows"), layout.endswith("(out,in)")
    flip = (kind == "W" and not w_out_in) or (kind == "act" and not rows)
    return np.ascontiguousarray(a.T if flip else a)


def _canon(layout: str, a: NDArray, kind: str) -> NDArray:
    """Inverse of :func:`_store`: back to the canonical orientation."""
    rows, w_out_in = layout.startswith("rows"), layout.endswith("(out,in)")
    flip = (kind == "W" and not w_out_in) or (kind == "act" and not rows)
    return a.T if flip else a


class FloorImpl(Impl):
    """The unavoidable products of each training step, and nothing else.

    ``layout`` is one of :data:`LAYOUTS`, or a dict giving one per product (a "mixed" floor),
    ``{(l, "fwd" | "dW" | "dX"): layout}``. Products of one layer in one layout share their
    operands (W is read by the forward and the input-gradient product, as in training).
    Operands are float32 from a fixed seed; ``canon`` keeps them in canonical orientation.
    ``mm`` makes the products (NumPy's matmul, i.e. its BLAS; :func:`cblas_matmul` for another
    library's), and ``prefix`` names the floor (``floor-mkl[...]``).
    """

    def __init__(self, spec: Spec, layout: str | dict = "rows/W(out,in)", seed: int = 0, mm=np.matmul,
                 prefix: str = "floor"):
        self.spec, self.layout, self.mm = spec, layout, mm
        self.name = f"{prefix}[{layout}]" if isinstance(layout, str) else f"{prefix}[mixed]"
        rng = np.random.default_rng(seed)
        n, sizes = spec.batch, spec.sizes
        self.canon: list[dict] = []
        self.stored: dict[tuple[int, str], dict] = {}
        self.calls: list[tuple[int, str, object]] = []  # (layer, product, fn(Xb) or fn())
        for l in range(1, len(sizes)):
            m_in, m_out = sizes[l - 1], sizes[l]
            c = {"W": rng.standard_normal((m_out, m_in), dtype=np.float32),
                 "G": rng.standard_normal((n, m_out), dtype=np.float32),
                 "X": rng.standard_normal((n, m_in), dtype=np.float32) if l > 1 else None}
            self.canon.append(c)
            for what in ("fwd", "dW", "dX"):
                if what == "dX" and l == 1:
                    continue  # the input needs no gradient
                lay = self.layer_layout(l, what)
                a = self._arrays(l, lay, c, n, m_in, m_out)
                fwd, dw, dx = _layer_products(lay, a["W"], a["G"], a["S"], a["dW"], a["dX"], mm=self.mm)
                f = {"fwd": fwd, "dW": dw, "dX": dx}[what]
                if what == "dX":
                    self.calls.append((l, what, f))
                elif l == 1:
                    rows = lay.startswith("rows")  # the batch is (n, d); cols layouts read X0.T
                    self.calls.append((l, what, f if rows else (lambda Xb, f=f: f(Xb.T))))
                else:
                    self.calls.append((l, what, (lambda f=f, X=a["X"]: f(X))))

    def _arrays(self, l, lay, c, n, m_in, m_out) -> dict:
        key = (l, lay)
        if key not in self.stored:
            self.stored[key] = {
                "W": _store(lay, c["W"], "W"),
                "G": _store(lay, c["G"], "act"),
                "X": _store(lay, c["X"], "act") if c["X"] is not None else None,
                "S": _store(lay, np.zeros((n, m_out), np.float32), "act"),
                "dW": _store(lay, np.zeros((m_out, m_in), np.float32), "W"),
                "dX": _store(lay, np.zeros((n, m_in), np.float32), "act") if l > 1 else None,
            }
        return self.stored[key]

    def layer_layout(self, l: int, what: str) -> str:
        return self.layout if isinstance(self.layout, str) else self.layout[(l, what)]

    def reset(self, init) -> None:
        pass

    def step(self, Xb, yb=None, eta=None):
        """The products of one step; ``Xb`` is the (n, d) input batch (rows)."""
        for l, _, f in self.calls:
            if l == 1:
                f(Xb)
            else:
                f()

    def epoch(self, X, y, plan):
        B, calls = plan.batch, self.calls
        first = [f for l, _, f in calls if l == 1]
        rest = [f for l, _, f in calls if l > 1]
        for j in range(plan.n_batches):
            s = int(plan.perm[j * B]) // B * B  # a block of rows as far away as the batch's
            Xb = X[s : s + B]
            for f in first:
                f(Xb)
            for f in rest:
                f()

    def results(self) -> list[dict[str, NDArray]]:
        """Each layer's S, dW, dX after the last step, in canonical orientation."""
        out = []
        for l in range(1, len(self.spec.sizes)):
            r = {}
            for what, name, kind in (("fwd", "S", "act"), ("dW", "dW", "W"), ("dX", "dX", "act")):
                if what == "dX" and l == 1:
                    r[name] = None
                    continue
                lay = self.layer_layout(l, what)
                r[name] = _canon(lay, self.stored[(l, lay)][name], kind)
            out.append(r)
        return out

    def params(self):
        return {}


def product_shapes(spec: Spec) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(layer, product, (M, K, N) of the canonical product) for every unavoidable product."""
    n, sizes = spec.batch, spec.sizes
    out = []
    for l in range(1, len(sizes)):
        m_in, m_out = sizes[l - 1], sizes[l]
        out.append((l, "fwd", (n, m_in, m_out)))
        out.append((l, "dW", (m_out, n, m_in)))
        if l > 1:
            out.append((l, "dX", (n, m_out, m_in)))
    return out


def epoch_flops(spec: Spec, n_batches: int) -> float:
    return float(sum(2 * M * Kd * N for _, _, (M, Kd, N) in product_shapes(spec))) * n_batches


def time_products(spec: Spec, X: NDArray, reps: int = 200, rounds: int = 5) -> dict[tuple[int, str, str], float]:
    """Seconds per call of every unavoidable product in every layout: the minimum over
    ``rounds`` (layouts interleaved, so drifting load hits all alike) of the mean of ``reps``
    calls. The first layer reads a fresh batch of ``X`` per call, as an epoch does."""
    B = spec.batch
    nb = X.shape[0] // B
    batches = [X[(i % nb) * B : (i % nb + 1) * B] for i in range(reps)]
    floors = {lay: FloorImpl(spec, lay) for lay in LAYOUTS}
    out: dict[tuple[int, str, str], float] = {}
    for _ in range(rounds):
        for lay, fl in floors.items():
            for l, what, f in fl.calls:
                t0 = time.perf_counter()
                if l == 1:
                    for Xb in batches:
                        f(Xb)
                else:
                    for _ in range(reps):
                        f()
                dt = (time.perf_counter() - t0) / reps
                key = (l, what, lay)
                out[key] = min(out.get(key, math.inf), dt)
    return out


def best_mixed_layout(spec: Spec, timings: dict[tuple[int, str, str], float]) -> dict[tuple[int, str], str]:
    """Per product, the layout with the lowest time (a floor no single layout may reach)."""
    best = {}
    for l, what, _ in product_shapes(spec):
        best[(l, what)] = min(LAYOUTS, key=lambda lay: timings[(l, what, lay)])
    return best


def gather_seconds(X: NDArray, y: NDArray, plan: Plan) -> None:
    """The batch gathers of an epoch alone (``X[idx]``, ``y[idx]``), as fastnet's loop does them."""
    for j in range(plan.n_batches):
        idx = plan.idx(j)
        X[idx]
        y[idx]


# ------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    gemm: str | None = None  # fastnet's fused step: the matrix-multiply provider it ran on

    @property
    def median(self) -> float:
        return float(np.median(self.wall)) if self.wall else math.nan

    @property
    def best(self) -> float:
        return float(min(self.wall)) if self.wall else math.nan

    @property
    def cpu_per_wall(self) -> float:
        """Process CPU seconds per wall second: ~1 single-threaded, up to the threads used."""
        return float(np.median(np.divide(self.cpu, self.wall))) if self.wall else math.nan


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn(*args)``."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0
