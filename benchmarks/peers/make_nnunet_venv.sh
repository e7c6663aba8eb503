#!/usr/bin/env bash
# Build the separate virtual environment in which unmodified nnU-Net v2 from PyPI runs.
# It cannot share medcl's venv: PyPI's torchvision wheels do not load beside the CPU build of
# torch 2.13.0 that medcl pins ("operator torchvision::nms does not exist"), and nnU-Net's
# network package imports timm, which imports torchvision. Exact pins, never a range.
# About 6.4 GB (the CUDA libraries come along); nnU-Net runs on the CPU here.
#   bash benchmarks/peers/make_nnunet_venv.sh [VENV_DIR]   (default: .venv-nnunet)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${1:-.venv-nnunet}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install --quiet nnunetv2
"$VENV/bin/python" -c "import nnunetv2, torch, torchvision; print('nnunetv2 ok, torch', torch.__version__)"
"$VENV/bin/python" -m pip freeze > "$VENV/freeze.txt"
touch "$VENV/.installed"
