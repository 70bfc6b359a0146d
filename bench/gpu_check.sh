#!/usr/bin/env bash
# A prepared GPU check (bench/gpu_check.py): SFT with packing vs an HF Trainer with padded batches
# (tokens/s), an eval, and DPO through TRL, on one CUDA GPU in bf16, offline, in a few minutes.
# Exits 2 at once without CUDA. Not part of CI.  Usage: bash bench/gpu_check.sh [--steps N] [...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 540 "$PYTHON" bench/gpu_check.py "$@"
