#!/usr/bin/env bash
# Create .venv and install baco-integrations with its test and evaluation extras.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: this exact version installs a CPU build; a looser spec may pull a
# multi-GB CUDA build. On a GPU machine, install your CUDA torch before running this script.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[test]"
