#!/usr/bin/env bash
# README command 2: build/reuse the venv (torch first, then nnU-Net), install nnunet-lean
# NON-editable, run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup_env.sh" | tail -n 1)
cd "$root"
# the venv's pytest executable (not `python -m pytest`): the checkout must not shadow the install
exec "$venv/bin/pytest" -p no:cacheprovider --durations=15 "$root/tests" "$@"
