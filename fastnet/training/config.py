"""TrainConfig, every setting of a run, with its checks; the lists of its fields (types, optional,
bonus) derived from the dataclass; the network, optimiser and learning-rate schedule it describes."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import get_args, get_type_hints

import numpy as np

from fastnet.backends.gemm_choice import check_name as check_gemm_name
from fastnet.backends.gemm_choice import resolve as resolve_gemm
from fastnet.data.augment import TTA_MODES
from fastnet.data.batches import N_CLASSES
from fastnet.data.whiten import MODES as WHITEN_MODES
from fastnet.errors import ConfigError
from fastnet.model.network import (
    DEFAULT_ALPHA,
    DEFAULT_EPS,
    INITS,
    PLACEMENTS,
    Network,
    check_architecture,
    init_network,
)
from fastnet.model.optim import (
    DECAYS,
    OPTIMIZERS,
    check_adam,
    check_cyclic,
    check_schedule,
    learning_rate,
    make_optimizer,
)
from fastnet.training.fused import beside_pays, splits_itself
from fastnet.util.parse import MAX_INT


#: ``--precision``: fp32, or bf16 inputs to the first layer's two products (fastnet/training/fused.py).
PRECISIONS = ("fp32", "bf16")


def setting(default, doc: str):
    """A setting of the assignment's runs; ``doc`` is its meaning, shown by ``help(fastnet.train)``."""
    return field(default=default, metadata={"doc": doc})


def recorded_if_set(default, doc: str):
    """A setting of how a run computes, not of what: ``to_dict`` leaves it out while it is at
    its default, so the configurations of runs made before it existed read back unchanged."""
    return field(default=default, metadata={"omit_default": True, "doc": doc})


def bonus(default, doc: str):
    """A bonus setting (Exercise 4): ``to_dict`` leaves it out while it is at its default."""
    return field(default=default, metadata={"bonus": True, "doc": doc})


@dataclass
class TrainConfig:
    """Every hyper-parameter of a run. Defaults: the assignment's Exercise 3 setting.

    Each field's meaning is its ``doc`` metadata: the one text ``help(fastnet.train)`` lists
    (:func:`fastnet.api.settings.settings_doc`)."""

    hidden: tuple[int, ...] = setting((50, 50), "hidden layer sizes, e.g. (50, 50) or (50, 30, 20, 20, 10, 10, 10, 10)")
    bn: bool = setting(True, "batch normalization before each ReLU, eqs (12)-(19)")
    init: str = setting("he", "weight initialisation: he, xavier or normal (std sigma at every layer)")
    sigma: float | None = setting(None, "std of init normal, the same at every layer")
    lam: float = setting(0.005, "L2 regularisation lambda, eq (20)")
    eta_min: float = setting(1e-5, "cyclic learning rate minimum")
    eta_max: float = setting(1e-1, "cyclic learning rate maximum")
    n_s: int | None = setting(None, "half-cycle length in update steps (None: 5 * n_train / batch, 2250 for 45,000 images)")
    cycles: int = setting(2, "number of learning-rate cycles")
    batch: int = setting(100, "mini-batch size; the training set is reshuffled every epoch")
    alpha: float = setting(DEFAULT_ALPHA, "decay of the BN running averages, eqs (38)-(39) (PyTorch momentum = 1 - alpha)")
    eps: float = setting(DEFAULT_EPS, "epsilon of batch normalize, eq (11)")
    seed: int = setting(0, "random seed: initialisation and shuffling")
    dtype: str = setting("float32", "floating-point type for training: float32 or float64")
    backend: str = setting("auto", "kernel backend: auto, numpy, numba or cython (auto: $FASTNET_BACKEND, else the first available)")
    gemm: str = recorded_if_set("auto", "matrix-multiply provider of the fused step: auto, openblas (NumPy's) or mkl (pip install 'fastnet[mkl]'); "
                                "auto: MKL where it is installed and measured faster for the first layer's products on this CPU, else OpenBLAS")
    precision: str = recorded_if_set("fp32", "precision of the first layer's two products in the fused step: fp32, or bf16 (bfloat16 inputs, float32 sums "
                                     "and weights; the cython backend: fastnet's kernels on a CPU with AVX512_BF16, MKL's bf16 product with --gemm mkl "
                                     "or, emulated, where the CPU has no AVX512_BF16); everything else stays float32")
    split: str = setting("a3", "a3: batches 1-5 minus n_val for training; a2: batch 1 train, batch 2 validation")
    n_val: int = setting(5000, "validation images held out of batches 1-5 for split a3")
    eval_every: int = setting(0, "also evaluate every N update steps (0: only at epoch ends)")
    # ---- bonus (Exercise 4; see the module docstring): marked bonus(), left out of to_dict at their defaults
    bn_placement: str = bonus("before", "batch norm before the ReLU (the assignment's) or after it (4.1a)")
    skip: bool = bonus(False, "skip connections, eqs (40)-(41): hidden layer l+1 receives x^(l-1) for l = 2, 4, ... (needs equal widths there)")
    optimizer: str = bonus("sgd", "update rule: sgd or adam (adam needs eta_max <= 0.01)")
    beta1: float = bonus(0.9, "Adam's first-moment decay")
    beta2: float = bonus(0.999, "Adam's second-moment decay")
    adam_eps: float = bonus(1e-8, "Adam's epsilon")
    schedule: str = bonus("cyclic", "learning-rate schedule: cyclic, step, exponential or cosine; every one runs 2 * n_s * cycles steps")
    decay_rate: float = bonus(0.1, "step/exponential: factor per decay_steps")
    decay_steps: int | None = bonus(None, "step/exponential: steps per decay_rate (None: a third of the run for step, the whole run for exponential)")
    warmup: int = bonus(0, "step/exponential/cosine: steps of linear warm-up from eta_min to eta_max")
    augment: bool = bonus(False, "random horizontal flips and translations of every training batch, on the fly")
    augment_shift: int = bonus(3, "augment: largest translation in pixels (0..8)")
    # ---- input whitening (issue 17): fitted once per run on the training rows, stored with the model (fastnet/data/whiten.py)
    contrast: bool = bonus(False, "per-image contrast normalisation: each image minus its mean, divided by sqrt(its variance + 0.01)")
    whiten: str = bonus("none", "input whitening fitted on the training set and its mirror images: none, pca or zca (zca keeps the image shape)")
    whiten_eps: float = bonus(10.0, "whitening: epsilon added to the covariance eigenvalues, 1 / sqrt(lambda + eps); the pixels are normalised, so the eigenvalues sum to 3072")
    whiten_dims: int | None = bonus(None, "whiten pca: keep the top N components, the network's input width (None: all 3072)")
    # ---- end of input whitening
    bn_stats: str = bonus("ema", "test-time BN statistics: ema (exponential averages, eqs 38-39) or precise (PreciseBN, 4.1b)")
    precise_every: int = bonus(0, "bn_stats precise: also re-estimate and evaluate every N steps (0: at epoch ends and after training)")
    precise_images: int = bonus(10_000, "bn_stats precise: training images per estimate, in batches of batch")
    eval_train_images: int = bonus(0, "measure the training loss and accuracy on a fixed random subset of N training images (0: all)")
    # ---- regularisers for long runs (issue 17): each off by default; training only, never at test time
    label_smoothing: float = bonus(0.0, "label smoothing eps in [0, 1): train against (1 - eps) onehot + eps / K (0: off)")
    mixup: float = bonus(0.0, "MixUp alpha >= 0: each batch mixed with a permutation of itself, lambda ~ Beta(alpha, alpha) per batch (0: off)")
    dropout: float = bonus(0.0, "inverted dropout probability p in [0, 1) on every hidden layer's output, scaled by 1 / (1 - p) in training (0: off)")
    decay: str = bonus("l2", "weight decay: l2 (lambda ||W||^2 in the cost, eq 20) or decoupled (AdamW's, apart from Adam's moments; for sgd the same step as l2)")
    # ---- test-time augmentation (issue 17): the finished run's test (and final validation) figures only
    tta: str = bonus("none", "test-time augmentation of the finished run's test images (and its final validation figure, val_accuracy_tta): none, "
                             "flip (each image and its mirror) or flip-shift (also moved 1 px up, down, left, right: 10 views); the predicted "
                             "probabilities are averaged. The history's rows are measured without it")

    def validate(self) -> "TrainConfig":
        """Refuse impossible settings before any work is done; returns self.

        Values may come from a JSON file, so their types are checked first: ``{"lam": "x"}``
        gets a sentence, not a TypeError deep inside the training loop.
        """
        self._check_types()
        if not self.hidden or any(int(m) < 1 for m in self.hidden):
            raise ConfigError(f"hidden layer sizes must be positive integers, got {list(self.hidden)}")
        if self.init not in INITS:
            raise ConfigError(f"unknown initialisation {self.init!r}; choose one of {', '.join(INITS)}")
        if self.init == "normal" and (self.sigma is None or not self.sigma > 0):
            raise ConfigError("--init normal needs a positive --sigma")
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ConfigError(f"lambda must be a non-negative number, got {self.lam}")
        check_cyclic(self.eta_min, self.eta_max, self.n_s if self.n_s is not None else 1, self.cycles)
        if self.batch < 2 and self.bn:
            raise ConfigError(f"batch norm needs mini-batches of at least 2 samples, got --batch {self.batch}")
        if self.batch < 2:  # the compiled whole step takes 2 rows or more: refused here, before any work
            raise ConfigError(f"mini-batches need at least 2 samples, got --batch {self.batch}")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"alpha must be in [0, 1), got {self.alpha}")
        if not self.eps > 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be non-negative, got {self.eval_every}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
        check_gemm_name(self.gemm)  # whether its library is installed: checked when a run starts (gemm_for)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.precision == "bf16" and self.dtype != "float32":
            raise ConfigError("--precision bf16 trains float32 weights (bf16 inputs to the first layer's products); it does not combine with --dtype float64")
        self._validate_bonus()
        self._validate_regularisers()
        self._validate_whitening()  # issue 17
        return self

    def _validate_regularisers(self) -> None:
        """The regularisers for long runs (issue 17): one sentence per bad value."""
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1) (0: off), got {self.label_smoothing:g}")
        if not self.mixup >= 0:
            raise ConfigError(f"mixup is the alpha of Beta(alpha, alpha) and must be >= 0 (0: off), got {self.mixup:g}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout is a probability in [0, 1) (0: off), got {self.dropout:g}")
        if self.decay not in DECAYS:
            raise ConfigError(f"unknown decay {self.decay!r}; choose one of {', '.join(DECAYS)}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"unknown test-time augmentation {self.tta!r}; choose one of {', '.join(TTA_MODES)}")
        if self.tta != "none" and self.whiten == "pca":
            raise ConfigError("--tta needs image-shaped inputs; PCA-whitened rows are not images (use --whiten zca or --tta none)")

    def _validate_bonus(self) -> None:
        """The bonus settings (Exercise 4): refused before any work, one sentence each."""
        if self.bn_placement not in PLACEMENTS:
            raise ConfigError(f"unknown batch-norm placement {self.bn_placement!r}; choose one of {', '.join(PLACEMENTS)}")
        check_architecture([1, *self.hidden, 2], self.bn, self.bn_placement, self.skip)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "adam":
            check_adam(self.beta1, self.beta2, self.adam_eps, self.eta_min, self.eta_max)
        total = 2 * self.n_s * self.cycles if self.n_s is not None else None
        check_schedule(self.schedule, self.decay_rate, self.decay_steps, self.warmup, total)
        if not 0 <= self.augment_shift <= 8:
            raise ConfigError(f"augment_shift must be 0..8 pixels, got {self.augment_shift}")
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"unknown bn_stats {self.bn_stats!r}; choose one of {', '.join(BN_STATS)}")
        if self.bn_stats == "precise" and not self.bn:
            raise ConfigError("--bn-stats precise re-estimates batch-norm statistics; the network has no batch norm (--no-bn)")
        if self.precise_every < 0:
            raise ConfigError(f"precise_every must be non-negative, got {self.precise_every}")
        if self.eval_train_images < 0:
            raise ConfigError(f"eval_train_images must be non-negative (0: all), got {self.eval_train_images}")
        if self.bn_stats == "precise" and self.precise_images < max(2, self.batch):
            raise ConfigError(f"precise_images must be at least one batch ({self.batch}), got {self.precise_images}")

    def _validate_whitening(self) -> None:
        """Input whitening (issue 17): one sentence per bad value."""
        if self.whiten not in WHITEN_MODES:
            raise ConfigError(f"unknown whitening {self.whiten!r}; choose one of {', '.join(WHITEN_MODES)}")
        if not self.whiten_eps > 0:
            raise ConfigError(f"whiten_eps must be positive (it is added to eigenvalues that may be 0), got {self.whiten_eps}")
        if self.whiten_dims is not None and self.whiten != "pca":
            raise ConfigError("--whiten-dims keeps the top PCA components and needs --whiten pca (zca keeps all 3072 values, image-shaped)")
        if self.whiten_dims is not None and not 1 <= self.whiten_dims <= 3072:
            raise ConfigError(f"whiten_dims must be 1..3072 components, got {self.whiten_dims}")
        if self.whiten == "pca" and self.augment and self.augment_shift > 0:
            raise ConfigError("PCA-whitened rows are not images and cannot be translated, only flipped (a sign change of the odd components): "
                              "pass --augment-shift 0 with --whiten pca, or use --whiten zca to keep translations")

    def _check_types(self) -> None:
        """ConfigError naming the first field whose value has the wrong type or is not finite."""
        def bad(name, want):
            value = getattr(self, name)
            return ConfigError(f"{name} must be {want}, got {json_repr(value)}")

        hidden = self.hidden
        if not isinstance(hidden, (tuple, list)) or not all(_is_int(m) for m in hidden):
            raise bad("hidden", "a list of positive integers such as [50, 50]")
        if len(hidden) > 100 or any(m > MAX_INT for m in hidden):
            raise bad("hidden", f"a list of positive integers such as [50, 50], at most 100 of at most {MAX_INT}")
        self.hidden = tuple(int(m) for m in hidden)
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            kind = _FIELD_KINDS.get(name)
            if kind is None or (value is None and name in _OPTIONAL):
                continue
            if kind is bool and not isinstance(value, bool):
                raise bad(name, "true or false")
            if kind is int and not _is_int(value):
                raise bad(name, "a whole number")
            if kind is int and not -MAX_INT <= value <= MAX_INT:  # a 400-digit n_s overflowed deep in the loop
                raise bad(name, f"a whole number of at most {MAX_INT}")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise bad(name, "a number")
                if not math.isfinite(value):
                    raise bad(name, "a finite number")
                setattr(self, name, float(value))
            if kind is str and not isinstance(value, str):
                raise bad(name, "a string")

    def resolved_n_s(self, n_train: int) -> int:
        return int(self.n_s) if self.n_s is not None else max(1, 5 * n_train // self.batch)

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict; bonus settings only where they differ from their
        defaults (so the assignment's runs keep the configuration they always had)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        for name, default in OMITTED_AT_DEFAULT.items():
            if d[name] == default and type(d[name]) is type(default):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return cls(**d)  # types are checked by validate()


#: Every setting, in the order of the dataclass (the command line has a flag for each).
CONFIG_FIELDS = tuple(f.name for f in fields(TrainConfig))
_HINTS = get_type_hints(TrainConfig)


def _scalar_kind(hint):
    """bool, int, float or str for an annotation ``X`` or ``X | None``; None for any other
    (``hidden``, a tuple, is checked on its own)."""
    args = get_args(hint)
    kinds = [a for a in args if a is not type(None)] if type(None) in args else [hint]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (bool, int, float, str) else None


#: The type each setting's value must have, from its annotation.
_FIELD_KINDS = {name: _scalar_kind(_HINTS[name]) for name in CONFIG_FIELDS if _scalar_kind(_HINTS[name]) is not None}
#: Settings that may be None (annotated ``X | None``).
_OPTIONAL = tuple(name for name in CONFIG_FIELDS if type(None) in get_args(_HINTS[name]))
BONUS_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("bonus"))
BONUS_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.name in BONUS_FIELDS}
#: What ``to_dict`` leaves out at its default: the bonus settings and the recorded_if_set ones.
OMITTED_AT_DEFAULT = {f.name: f.default for f in fields(TrainConfig) if f.metadata.get("bonus") or f.metadata.get("omit_default")}
BN_STATS = ("ema", "precise")
BACKEND_NAMES = ("auto", "numpy", "numba", "cython")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def json_repr(value) -> str:
    """A value as it would appear in a JSON file, cut short (a hostile file can hold anything)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def new_network(cfg: TrainConfig, d: int, K: int) -> Network:
    """The network a configuration describes, initialised from its seed."""
    sizes = [d, *cfg.hidden, K]
    n_params = sum(a * b for a, b in zip(sizes, sizes[1:]))
    need = 4 * n_params * np.dtype(cfg.dtype).itemsize  # parameters, gradients, float64 draws
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        have = None
    if have and need > have:
        raise ConfigError(f"a network with hidden layers {list(cfg.hidden)} has {n_params:,} weights and needs about {need / 2**30:.0f} GB, more than this machine's {have / 2**30:.0f} GB; choose smaller --hidden sizes")
    rng = np.random.default_rng([cfg.seed, 1])  # its own stream: independent of the shuffling
    return init_network(d, cfg.hidden, K, bn=cfg.bn, init=cfg.init, sigma=cfg.sigma, dtype=cfg.dtype, eps=cfg.eps, alpha=cfg.alpha, rng=rng,
                        bn_placement=cfg.bn_placement, skip=cfg.skip)


def gemm_for(cfg: TrainConfig, d: int, name: str | None = None, *, fused: bool = True, threads: int = 1,
             cuts_small: bool = False) -> str:
    """The matrix-multiply provider a run of ``cfg`` on ``d`` inputs and ``threads`` BLAS threads
    uses (one of :data:`fastnet.backends.gemm_choice.PROVIDER_NAMES`), for ``name`` (default ``cfg.gemm``): auto's choice for its first
    layer's shape (:mod:`fastnet.backends.gemm_choice`). ConfigError, before any work, if it is
    not installed. ``fused`` False (a backend without a fused step): every product is NumPy's,
    so auto is OpenBLAS without a measurement. The step calls BLAS on one thread per core with
    one thread, or two where the step splits itself over two cores (:func:`splits_itself`,
    as :class:`Stepper` decides; ``cuts_small``: the fused step's kernel can cut the small
    layers too); else auto chooses only among providers that thread (not MKL's sequential layer)."""
    name = cfg.gemm if name is None else name
    if name == "auto" and not fused:
        check_gemm_name(name)
        return "openblas"
    # augmented in Python, outside the fused step's gather: PCA rows' flips (Stepper, augmenter)
    python_augmented = cfg.augment and cfg.whiten == "pca"
    sizes, bf16 = [d, *cfg.hidden, N_CLASSES], cfg.precision == "bf16"
    splits = splits_itself(sizes, augmented=python_augmented, bf16=bf16, cuts_small=cuts_small)
    # given two threads, a bf16 step may take one core with the gather beside it, BLAS on one thread
    beside = threads == 2 and beside_pays(sizes, augmented=python_augmented, bf16=bf16)
    one_thread = threads == 1 or (threads == 2 and (splits or beside))
    return resolve_gemm(name, batch=cfg.batch, d=d, m1=cfg.hidden[0], dtype=cfg.dtype, one_thread=one_thread,
                        bf16=bf16, one_core=threads == 1 or beside)


def new_optimizer(cfg: TrainConfig, net: Network):
    """The optimiser a configuration describes, fresh (Adam's moments at zero)."""
    return make_optimizer(cfg.optimizer, net.params(), cfg.beta1, cfg.beta2, cfg.adam_eps)


def schedule_fn(cfg: TrainConfig, n_s: int, total: int):
    """The learning rate as a function of the update step t (from 0), for this run."""
    return lambda t: learning_rate(t, cfg.schedule, cfg.eta_min, cfg.eta_max, n_s, total, cfg.decay_rate, cfg.decay_steps, cfg.warmup)


#: Floating-point operations per second assumed for the estimate of :func:`estimated_seconds`
#: (a cautious figure for one core of this kind of machine; the estimate errs long).
FLOPS = 2e9
#: A run estimated to take longer than this is refused unless confirmed (--no-time-limit).
TIME_LIMIT_SECONDS = 24 * 3600.0


def estimated_seconds(cfg: TrainConfig, n_train: int | None = None) -> float:
    """A rough, cautious estimate of a run's time: its update steps times the cost of one
    (forward and backward, 6 flops per weight and image) plus its evaluations (an epoch's
    end: the training and validation images forward, 2 flops per weight and image)."""
    n_train = n_train if n_train is not None else (10_000 if cfg.split == "a2" else max(1, 50_000 - cfg.n_val))
    sizes = [input_width(cfg), *cfg.hidden, 10]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    steps = 2 * cfg.resolved_n_s(n_train) * cfg.cycles
    epochs = steps * cfg.batch / n_train
    return (6.0 * weights * cfg.batch * steps + 2.0 * weights * 60_000 * epochs + whitening_flops(cfg, n_train)) / FLOPS


def input_width(cfg: TrainConfig) -> int:
    """The network's input width: 3072, or the PCA components kept (issue 17)."""
    return cfg.whiten_dims if cfg.whiten == "pca" and cfg.whiten_dims else 3072


def whitening_flops(cfg: TrainConfig, n_train: int) -> float:
    """The whitening's fit (second moments of two 1536-wide halves, two eigendecompositions)
    and its transform of 60,000 images (1536 x width per half); 0 without whitening."""
    if cfg.whiten == "none":
        return 0.0
    return 2 * n_train * 1536.0**2 + 2 * 10 * 1536.0**3 + 2 * 60_000 * 1536.0 * input_width(cfg)


def check_time_limit(cfg: TrainConfig, confirmed: bool, limit: float | None = None) -> None:
    """ConfigError, before any work, for a run estimated to take longer than ``limit``
    (default :data:`TIME_LIMIT_SECONDS`) unless ``confirmed`` (``--no-time-limit``); the
    sentence gives the estimate."""
    limit = TIME_LIMIT_SECONDS if limit is None else limit
    seconds = estimated_seconds(cfg)
    if seconds > limit and not confirmed:
        raise ConfigError(f"this run would take about {_duration(seconds)} ({2 * cfg.resolved_n_s(50_000 - cfg.n_val if cfg.split == 'a3' else 10_000) * cfg.cycles:,} "
                          f"update steps), more than the limit of {limit / 3600:g} hours; choose smaller --hidden sizes, lower --n-s or --cycles, or pass --no-time-limit to run it anyway")


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:,.3g} {unit}"
    return f"{seconds:.0f} seconds"
