"""Command line: ``fastnet-train`` and ``fastnet <command>``.

Imports are deferred to the command that needs them, so ``--help`` is fast (no Numba, no
matplotlib). A :class:`fastnet.errors.FastnetError` is printed as one line and exits with
status 2, without a traceback; so are argument errors (argparse's own convention).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fastnet.errors import FastnetError
from fastnet.util.parse import layer_sizes, number

EXIT_USER_ERROR = 2


# ------------------------------------------------------------------------ argument types


# The strict parsers of fastnet.util.parse (``50,,50``, ``5_0``, ``1e400`` and huge integers
# are errors); imported under the names the flags below use.
_hidden = layer_sizes
_number = number


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``fastnet-train``. Defaults are None here and filled from TrainConfig, so a
    ``--config`` file and explicit flags can be layered (flags win)."""
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="the cifar-10-batches-py folder, a folder containing it, or one containing cifar-10-python.tar.gz (default: $FASTNET_DATA or ~/.cache/fastnet)")
    g.add_argument("--download", action="store_true", help="download the official archive (md5-checked) if the data is not found")
    g.add_argument("--split", choices=["a3", "a2"], help="a3: batches 1-5 minus --n-val for training (default); a2: batch 1 train, batch 2 validation")
    g.add_argument("--n-val", type=_number(int, 0), help="validation images held out of batches 1-5 for --split a3 (default 5000)")
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=_hidden, help="hidden layer sizes, e.g. 50,50 (default) or 50,30,20,20,10,10,10,10")
    g.add_argument("--bn", action=argparse.BooleanOptionalAction, default=None, help="batch normalization before each ReLU (default: on)")
    g.add_argument("--init", choices=["he", "xavier", "normal"], help="weight initialisation (default he)")
    g.add_argument("--sigma", type=_number(float, 0, strict=True), help="std of --init normal, the same at every layer")
    g.add_argument("--alpha", type=_number(float, 0), help="decay of the BN running averages, eqs (38)-(39) (default 0.9; PyTorch momentum = 1 - alpha)")
    g.add_argument("--eps", type=_number(float, 0, strict=True), help="epsilon of batch normalize, eq (11) (default 1e-8)")
    g = p.add_argument_group("training")
    g.add_argument("--lam", type=_number(float, 0), help="L2 regularisation lambda, eq (20) (default 0.005)")
    g.add_argument("--eta-min", type=_number(float, 0), help="cyclic learning rate minimum (default 1e-5)")
    g.add_argument("--eta-max", type=_number(float, 0, strict=True), help="cyclic learning rate maximum (default 1e-1)")
    g.add_argument("--n-s", type=_number(int, 1), help="half-cycle length in update steps (default 5 * n_train / batch = 2250)")
    g.add_argument("--cycles", type=_number(int, 1), help="number of learning-rate cycles (default 2)")
    g.add_argument("--batch", type=_number(int, 1), help="mini-batch size (default 100)")
    g.add_argument("--seed", type=_number(int, 0), help="random seed: initialisation and shuffling (default 0)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="floating-point type for training (default float32)")
    g.add_argument("--backend", choices=["auto", "numpy", "numba", "cython"], help="kernel backend (default auto, or $FASTNET_BACKEND)")
    g.add_argument("--gemm", choices=["auto", "openblas", "openblas-avx512", "mkl"], help="matrix-multiply provider of the fused step: openblas (NumPy's), openblas-avx512 "
                   "(OpenBLAS on its AVX-512 kernels, for CPUs where NumPy's picks older ones), mkl (needs pip install 'fastnet[mkl]') or auto "
                   "(default: whichever of them runs here and measures faster on this CPU for the first layer's products, else NumPy's OpenBLAS); "
                   "the provider used is recorded in config.json and metrics.json, and a resumed run uses it again")
    g.add_argument("--precision", choices=["fp32", "bf16"], help="the fused step's first-layer products: fp32 (default) or bf16 (bfloat16 inputs, float32 sums "
                   "and weights; cython backend: fastnet's kernels on CPUs with AVX512_BF16, MKL's bf16 product with --gemm mkl, "
                   "and MKL's, emulated, on other CPUs where MKL is installed); recorded in config.json, and a resumed run keeps it")
    g.add_argument("--eval-every", type=_number(int, 0), help="also evaluate every N update steps (default: only at epoch ends)")
    g.add_argument("--threads", type=_number(int, 1), help="BLAS threads (default: the cores idle at the start, by the load average: "
                   "with other work on the cores, more threads make BLAS far slower; a resumed run: the count it started with); recorded in config.json")
    g = p.add_argument_group("bonus (Exercise 4)")
    g.add_argument("--bn-placement", choices=["before", "after"], help="batch norm before the ReLU (default, the assignment's) or after it (4.1a)")
    g.add_argument("--bn-stats", choices=["ema", "precise"], help="test-time BN statistics: exponential averages, eqs (38)-(39) (default), or PreciseBN re-estimated with the model fixed (4.1b)")
    g.add_argument("--precise-every", type=_number(int, 0), help="--bn-stats precise: also re-estimate and evaluate every N steps (default: at epoch ends and after training)")
    g.add_argument("--precise-images", type=_number(int, 2), help="--bn-stats precise: training images per estimate, in batches of --batch (default 10000)")
    g.add_argument("--optimizer", choices=["sgd", "adam"], help="update rule (default sgd); adam needs --eta-max <= 0.01")
    g.add_argument("--beta1", type=_number(float, 0), help="Adam's first-moment decay (default 0.9)")
    g.add_argument("--beta2", type=_number(float, 0), help="Adam's second-moment decay (default 0.999)")
    g.add_argument("--adam-eps", type=_number(float, 0, strict=True), help="Adam's epsilon (default 1e-8)")
    g.add_argument("--schedule", choices=["cyclic", "step", "exponential", "cosine"], help="learning-rate schedule (default cyclic); every schedule runs 2 * n_s * cycles steps")
    g.add_argument("--decay-rate", type=_number(float, 0, strict=True), help="step/exponential: factor per --decay-steps (default 0.1)")
    g.add_argument("--decay-steps", type=_number(int, 1), help="step/exponential: steps per --decay-rate (default: a third of the run for step, the whole run for exponential)")
    g.add_argument("--warmup", type=_number(int, 0), help="step/exponential/cosine: steps of linear warm-up from eta-min to eta-max (default 0)")
    g.add_argument("--skip", action=argparse.BooleanOptionalAction, default=None, help="skip connections, eqs (40)-(41): hidden layer l+1 receives x^(l-1) for l = 2, 4, ... (needs equal widths there)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips and translations of every training batch, on the fly")
    g.add_argument("--augment-shift", type=_number(int, 0), help="--augment: largest translation in pixels (default 3)")
    w = p.add_argument_group("input whitening (issue 17; fitted once on the training set and its mirror images, stored with the model)")
    w.add_argument("--contrast", action=argparse.BooleanOptionalAction, default=None, help="per-image contrast normalisation: each image minus its mean, "
                   "divided by sqrt(its variance + 0.01), before any whitening")
    w.add_argument("--whiten", choices=["none", "pca", "zca"], help="whiten the inputs (default none): zca keeps the image shape (so --augment flips and "
                   "shifts it), pca feeds the components (with --augment: flips only, --augment-shift 0)")
    w.add_argument("--whiten-eps", type=_number(float, 0, strict=True), help="whitening: epsilon added to the eigenvalues, 1 / sqrt(lambda + eps) (default 10; the eigenvalues of the normalised pixels sum to 3072)")
    w.add_argument("--whiten-dims", type=_number(int, 1), help="--whiten pca: keep the top N components, the network's input width (default: all 3072)")
    g.add_argument("--eval-train-images", type=_number(int, 0), help="measure the training loss and accuracy on a fixed random subset of N training images (default 0: all)")
    add_regulariser_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--config", help="a JSON file of settings (keys as in config.json); flags given here override it")
    g.add_argument("--out", help="run folder to write (default runs/<date-time>)")
    g.add_argument("--overwrite", action="store_true", help="allow --out to be a folder that already holds a run (replaced once the new run starts)")
    g.add_argument("--no-time-limit", action="store_true", help="run even if the schedule is estimated to take longer than 24 hours (refused otherwise, with the estimate)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    g.add_argument("--log", action="append", choices=["tensorboard", "mlflow"], help="also log each step's loss and learning rate and each evaluation "
                   "to TensorBoard (RUN_DIR/tensorboard) or MLflow (RUN_DIR/mlruns); repeat for both; needs pip install 'fastnet[tensorboard]' / '[mlflow]'")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its checkpoint, with its own configuration (only --data-dir, --download, --no-plots, -q may be given too)")


# ---- regularisers for long runs (issue 17)
def add_regulariser_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of TrainConfig's regularisers for long runs; each off by default."""
    g = p.add_argument_group("regularisers for long runs (issue 17; training only, never at test time)")
    g.add_argument("--label-smoothing", type=_number(float, 0), help="train against targets (1 - eps) onehot + eps/K, eps in [0, 1) (default 0: off)")
    g.add_argument("--mixup", type=_number(float, 0), help="MixUp alpha: each batch mixed with a permutation of itself, lambda ~ Beta(alpha, alpha) (default 0: off; e.g. 0.2)")
    g.add_argument("--dropout", type=_number(float, 0), help="inverted dropout probability p on every hidden layer's output, in [0, 1) (default 0: off)")
    g.add_argument("--decay", choices=["l2", "decoupled"], help="l2: lambda ||W||^2 in the cost, eq (20) (default); decoupled: AdamW's weight decay, "
                   "applied to the weights apart from Adam's moments (for sgd the same step as l2)")
    t = p.add_argument_group("test-time augmentation (issue 17)")
    t.add_argument("--tta", choices=["none", "flip", "flip-shift"], help="average the predicted probabilities of each test image over views of it: flip (it and its "
                   "mirror image) or flip-shift (also moved 1 px up, down, left and right: 10 views) (default none); metrics.json also gets "
                   "val_accuracy_tta and test_accuracy_without_tta; the history's rows are measured without it")


def config_flags() -> tuple[str, ...]:
    """The flags that set a TrainConfig field, one per field as
    :data:`fastnet.training.config.CONFIG_FIELDS` lists them (imported here, not at the top,
    so that ``--help`` does not import NumPy)."""
    from fastnet.training.config import CONFIG_FIELDS

    return tuple(CONFIG_FIELDS)


def config_from_args(args):
    """A validated TrainConfig from a --config file (if any) overlaid with explicit flags."""
    from fastnet.api.settings import train_config

    return train_config({name: getattr(args, name, None) for name in config_flags()}, args.config,
                        no_time_limit=getattr(args, "no_time_limit", False))


# ------------------------------------------------------------------------------ commands


def cmd_train(args) -> int:
    from fastnet import api

    if getattr(args, "resume", None):
        given = [f"--{n.replace('_', '-')}" for n in (*config_flags(), "config", "out") if getattr(args, n, None) is not None] + ["--overwrite"] * bool(args.overwrite)
        if given:
            raise FastnetError(f"--resume continues a run with the configuration it started with; drop {', '.join(given)}")
        run = api.resume_into(args.resume, data=args.data_dir, download=args.download, threads=args.threads, progress=not args.quiet, plots=not args.no_plots,
                              log=args.log)
    else:
        cfg = config_from_args(args)
        run = api.train_into(cfg, args.out or default_run_dir(), data=args.data_dir, download=args.download, overwrite=args.overwrite,
                             threads=args.threads, progress=not args.quiet, plots=not args.no_plots, log=args.log)
    m = run.metrics
    print(f"test accuracy {m['test_accuracy']:.4f}  (validation {m['val_accuracy']:.4f}; {m['train_seconds']:.1f} s training)  -> {args.resume or run.path}")
    return 0


def default_run_dir() -> str:
    import time

    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))


def cmd_evaluate(args) -> int:
    from fastnet.runs.evaluate import evaluate_run

    if args.adaptive_bn:
        from fastnet.runs.evaluate import evaluate_adaptive

        r = evaluate_adaptive(args.run_dir, data_dir=args.data_dir, backend=args.backend, images=args.adaptive_images,
                              copies=args.copies if args.augment else 0, seed=args.seed)
        pool = f"{r['stats_images']} test images" + (f" + {r['copies']} augmented copies" if r["copies"] else "")
        print(f"test accuracy {r['test_accuracy']:.4f} with the stored BN statistics; {r['adaptive_test_accuracy']:.4f} with adaptive BN "
              f"(statistics of {pool}), on {r['n_test']} images")
        return 0
    if args.augment or args.adaptive_images is not None:
        raise FastnetError("--augment and --adaptive-images go with --adaptive-bn")
    result = evaluate_run(args.run_dir, data_dir=args.data_dir, backend=args.backend)
    recorded = result.get("recorded_test_accuracy")
    rec = f" (recorded at training: {recorded:.4f})" if recorded is not None else ""
    print(f"test accuracy {result['test_accuracy']:.4f} on {result['n_test']} images{rec}")
    return 0


def cmd_gradcheck(args) -> int:
    from fastnet import api

    result = api.gradcheck(args.backend, bonus=getattr(args, "bonus", False), regul=getattr(args, "regul", False))
    print(result)
    return 0 if result.passed else 1



def bf16_note() -> str:
    """Whether this machine runs ``--precision bf16``, and on whose products, for ``fastnet info``."""
    from fastnet.backends import load, providers
    from fastnet.util.cpu import cpu_flags, cpu_model

    cython = load("cython")
    fused = getattr(cython.ops, "fused_step", None) if cython.available else None
    if fused is None:
        return "no: they are the extension's fused step (cython backend), which is not built here"
    mkl = providers.mkl_bf16_gemm() is not None
    amx = "amx_bf16" in cpu_flags()
    if fused.bf16_supported():
        here = f"yes, on this CPU ({cpu_model()}, AVX512_BF16{', AMX' if amx else ''}), with the cython backend"
        from fastnet.training.fused import bf16_kernel

        ours = f"fastnet's kernels ({'AMX tiles' if bf16_kernel(fused) == 'amx-tiles' else 'AVX512_BF16'})"
        if not mkl:
            return f"{here}: {ours}"
        from fastnet.backends import gemm_choice

        batch, d, m1, _ = gemm_choice.DEFAULT_SHAPE
        mkls = f"MKL's{' (AMX tiles)' if amx else ''}"
        takes = []
        for one_core, step in ((False, "the two-core step"), (True, "a one-core step, its batch's bf16 copies made beside it")):
            entry = gemm_choice.bf16_choice(batch, d, m1, one_core=one_core)  # from the cache, or measured now (~1 s)
            timing = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in entry["seconds"].items())
            whose = mkls if entry["choice"] == "mkl" else "fastnet's kernels"
            takes.append(f"{whose} for {step} ({timing})")
        return (f"{here}: {ours} or {mkls}; for batch {batch} x {d} -> {m1} --gemm auto takes " + " and ".join(takes)
                + " (both products, 1 thread), --gemm mkl takes MKL's, --gemm openblas fastnet's")
    if mkl:
        return (f"emulated: this CPU ({cpu_model()}) has no AVX512_BF16, so they run on MKL's bf16 product "
                "(bf16 inputs and float32 sums as on a bf16 CPU, at float32's speed or below)")
    return (f"no: this CPU ({cpu_model()}) has no AVX512_BF16 "
            "(with Intel MKL installed, pip install 'fastnet[mkl]', they run here emulated)")


def cmd_info(args) -> int:
    import platform

    import numpy

    from fastnet.backends import AUTO_ORDER, info, resolve
    from fastnet.util.version import VERSION as __version__

    print(f"fastnet {__version__}, Python {platform.python_version()}, numpy {numpy.__version__}, {os.cpu_count()} CPUs")
    for b in info():
        print("  " + b.describe())
    print(f"auto order: {', '.join(AUTO_ORDER)}; auto picks: {resolve('auto').name}")
    from fastnet.backends import gemm_choice

    print("matrix-multiply providers of the fused step (--gemm):")
    for line in gemm_choice.describe():
        print("  " + line)
    print(f"bf16 products (--precision bf16): {bf16_note()}")
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        print(f"  threads: {pool.get('internal_api')} {pool.get('version')} num_threads={pool.get('num_threads')}")
    return 0


def cmd_download(args) -> int:
    from fastnet.data.fetch import OFFICIAL_MD5, OFFICIAL_URL, find_cifar10

    folder = find_cifar10(args.data_dir, download=True, url=args.url or OFFICIAL_URL, md5=OFFICIAL_MD5 if not args.url else args.md5, progress=not args.quiet)
    print(folder)
    return 0


def cmd_experiment(args) -> int:
    from fastnet import api

    result = api.experiment(args.name, args.out, data_dir=args.data_dir, workers=args.workers, scheduler=args.scheduler, quick=args.quick,
                            backend=args.backend, full_n_s=args.full_n_s, plots=not args.no_plots, lockstep=not args.no_lockstep)
    records = result if args.name == "all" else {args.name: result}
    failed = [f"{exp}/{run}" for exp, rec in records.items() for run in rec.get("failed", [])]
    print(f"experiment {args.name} -> {args.out}" + (f"; failed runs: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def cmd_sweep(args) -> int:
    from fastnet import api

    result = api.sweep(args.spec, args.out, data_dir=args.data_dir, workers=args.workers, scheduler=args.scheduler, backend=args.backend,
                       plots=not args.no_plots, lockstep=not args.no_lockstep)
    print(f"{len(result.executed)} runs trained, {len(result.skipped)} already finished, {len(result.failed)} failed -> {Path(args.out) / 'results.md'}")
    return 1 if result.failed else 0


def cmd_report(args) -> int:
    from fastnet import api

    print(api.report(args.experiment_dir, out=args.out))
    return 0


# -------------------------------------------------------------------------------- parsers


def _add_sweep_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", default=default_out, help=f"folder of the runs (default {default_out}/); finished runs in it are kept")
    p.add_argument("--data-dir", help="where CIFAR-10 is (as for train)")
    p.add_argument("--workers", type=_number(int, 1), help="processes training at once (default: the number of cores)")
    p.add_argument("--scheduler", help="address of a dask.distributed scheduler to submit the runs to, e.g. tcp://127.0.0.1:8786")
    p.add_argument("--backend", choices=["auto", "numpy", "numba", "cython"], help="kernel backend of every run (default auto)")
    p.add_argument("--no-plots", action="store_true", help="skip each run's PNG figures")
    p.add_argument("--no-lockstep", action="store_true", help="train every run on its own (default: runs differing only in lambda or the "
                                                              "learning-rate range train together in lock-step groups, one per worker)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastnet", description="Fast k-layer networks with batch norm on CIFAR-10 (DD2424 Assignment 3).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    t = sub.add_parser("train", help="train a network and write a run folder (same as fastnet-train)")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="reload a run's model and measure its test accuracy")
    e.add_argument("run_dir")
    e.add_argument("--data-dir")
    e.add_argument("--backend", choices=["auto", "numpy", "numba", "cython"])
    e.add_argument("--adaptive-bn", action="store_true", help="also measure with BN statistics re-estimated on the test images (adaptive BN, Exercise 4.1c)")
    e.add_argument("--adaptive-images", type=_number(int, 2), help="--adaptive-bn: estimate from only N test images drawn at random (accuracy is still measured on all)")
    e.add_argument("--augment", action="store_true", help="--adaptive-bn: add flipped and translated copies of those images to the estimate")
    e.add_argument("--copies", type=_number(int, 1), default=4, help="--augment: augmented copies of each image (default 4)")
    e.add_argument("--seed", type=_number(int, 0), default=0, help="--adaptive-bn: seed of the image draw and the augmentations (default 0)")
    e.set_defaults(func=cmd_evaluate)
    g = sub.add_parser("gradcheck", help="analytic vs numerical gradients, 2-4 layers, with and without BN")
    g.add_argument("--backend", choices=["auto", "numpy", "numba", "cython"], default="numpy")
    g.add_argument("--bonus", action="store_true", help="also the bonus architectures: BN after the ReLU, skip connections (eqs 40-41)")
    g.add_argument("--regul", action="store_true", help="also the regularisers for long runs (issue 17): label smoothing, MixUp, dropout, decoupled decay")
    g.set_defaults(func=cmd_gradcheck)
    i = sub.add_parser("info", help="backends, versions and threads")
    i.set_defaults(func=cmd_info)
    d = sub.add_parser("download", help="download and verify the official CIFAR-10 archive")
    d.add_argument("--data-dir")
    d.add_argument("--url", help="another address of the archive (file:// works)")
    d.add_argument("--md5", help="the md5 expected with --url (default: none checked)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_download)
    x = sub.add_parser("experiment", help="run one of the assignment's experiments (or all) into --out")
    x.add_argument("name", help="a2-default, ex2-3layer, ex2-9layer, ex3-3layer-bn, ex3-9layer-bn, lambda-search, final-3cycles, init-sensitivity, gradcheck or all; "
                                "bonus (Exercise 4: every bonus run) or one of bonus-bn-after, bonus-precise-bn, bonus-adaptive-bn, bonus-adam, bonus-wide, bonus-skip, bonus-augment, bonus-best; best-mlp (the best fully-connected network in 10 minutes, 3 seeds, one run at a time) or best-mlp-ablation")
    _add_sweep_arguments(x, default_out="experiments")
    x.add_argument("--quick", action="store_true", help="a few update steps per run (smoke test); same runs and folders")
    x.add_argument("--full-n-s", action="store_true", help="init-sensitivity with n_s = 2250 instead of 900")
    x.set_defaults(func=cmd_experiment)
    w = sub.add_parser("sweep", help="train every run of a JSON sweep file (resumable, in parallel)")
    w.add_argument("spec", help='JSON: {"base": {...}, "runs": [{"name": ..., ...}]} and/or {"grid": {"lam": [...], ...}}')
    _add_sweep_arguments(w, default_out="sweep")
    w.set_defaults(func=cmd_sweep)
    r = sub.add_parser("report", help="the PDF report (items i-v) and summary.md of an experiment folder")
    r.add_argument("experiment_dir")
    r.add_argument("--out", help="PDF to write (default EXPERIMENT_DIR/report.pdf)")
    r.set_defaults(func=cmd_report)
    return p


def _run(func, args) -> int:
    try:
        return func(args)
    except FastnetError as exc:
        print(f"fastnet: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or fastnet.training.state.Interrupted (SIGINT/SIGTERM, after a checkpoint)
        print(getattr(exc, "message", "fastnet: interrupted"), file=sys.stderr)
        return getattr(exc, "exit_code", 130)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def train_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastnet-train", description="Train a k-layer network on CIFAR-10 and write a run folder. Defaults: the assignment's Exercise 3 setting (3-layer [50,50], BN, He, lambda 0.005, cyclic eta 1e-5..1e-1, n_s 2250, 2 cycles, batch 100).")
    add_train_arguments(p)
    return _run(cmd_train, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
