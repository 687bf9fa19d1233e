#!/usr/bin/env bash
# Build (or reuse) the project's virtual environment and install nnunet-lean NON-editable into it.
# Prints the venv path on its last line. Reuses a venv cached under $NNUNET_LEAN_CACHE keyed by the
# hash of the requirement files; builds it from nothing when that path is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${NNUNET_LEAN_CACHE:-$HOME/.cache/nnunet-lean}"
key=$(cat "$root"/requirements/*.txt | sha256sum | cut -c1-16)   # every file: test.txt includes deploy.txt
venv="$cache/venv-$key"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "[setup] building $venv (torch first, then nnU-Net; a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    # torch + torchvision FIRST: see requirements/torch.txt
    "$venv/bin/python" -m pip install -q -r "$root/requirements/torch.txt" >&2
    "$venv/bin/python" -m pip install -q -r "$root/requirements/test.txt" >&2
    touch "$venv/.complete"
else
    echo "[setup] reusing $venv" >&2
fi
# Always reinstall the package itself, non-editable, so stock nnU-Net lookups see this checkout. A build/
# left by an earlier install would still hold modules since removed or moved: setuptools installs them too.
rm -rf "$root/build"
"$venv/bin/python" -m pip uninstall -q -y nnunet-lean >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation "$root" >&2
echo "$venv"
