#!/usr/bin/env bash
# Reproduce the Assignment 3 report from a fresh clone:
#   install fastnet, get CIFAR-10, run every experiment, write the PDF report.
#
#   bash scripts/reproduce.sh [OUT_DIR]        (default OUT_DIR: experiments)
#
# Environment: FASTNET_DATA (where CIFAR-10 goes, default ~/.cache/fastnet),
# WORKERS (training processes, default: the number of cores), SCHEDULER (a dask.distributed
# scheduler address to run the trainings on instead), EXTRA (more flags for
# `fastnet experiment`, e.g. "--quick" for a smoke run of a few steps per run), SKIP_INSTALL=1
# (use the fastnet already installed).
# Interrupted? Run it again: finished runs are kept, unfinished ones are redone.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${1:-experiments}

if [ -z "${SKIP_INSTALL:-}" ]; then
  python -m pip install --quiet -e .
fi

export FASTNET_DATA="${FASTNET_DATA:-$HOME/.cache/fastnet}"
if [ ! -f "$FASTNET_DATA/cifar-10-batches-py/test_batch" ] && [ ! -f "$FASTNET_DATA/cifar-10-python.tar.gz" ]; then
  if [ -f "$repo/../shared/data/cifar10/build_cifar10.py" ]; then
    echo "reproduce: building CIFAR-10 from ../shared/data/cifar10 into $FASTNET_DATA" >&2
    python "$repo/../shared/data/cifar10/build_cifar10.py" "$FASTNET_DATA" >/dev/null
  else
    echo "reproduce: downloading CIFAR-10 into $FASTNET_DATA" >&2
    fastnet download --data-dir "$FASTNET_DATA"
  fi
fi

flags=(--out "$out" --data-dir "$FASTNET_DATA")
[ -n "${WORKERS:-}" ] && flags+=(--workers "$WORKERS")
[ -n "${SCHEDULER:-}" ] && flags+=(--scheduler "$SCHEDULER")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && flags+=($EXTRA)

start=$(date +%s)
fastnet experiment all "${flags[@]}"
fastnet report "$out" >/dev/null
echo "reproduce: experiments and report took $(( $(date +%s) - start )) s; summary in $out/summary.md" >&2
echo "$(cd "$out" && pwd)/report.pdf"
