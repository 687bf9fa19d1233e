#!/usr/bin/env bash
# README command 1: on a fresh machine, install everything into a venv, then train and compare
# nnU-Net's default network with the Lean U-Net on a synthetic dataset (CPU). Args go to demo.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup_env.sh" | tail -n 1)
exec "$venv/bin/python" "$root/scripts/demo.py" "$@"
