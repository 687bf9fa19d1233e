#!/usr/bin/env bash
# The learning issue's long studies still open, one after another, each resumable and each recording its finished
# runs in a committed ledger (docs/ledgers/), so that a new machine (no ~/.cache/nnunet-lean) goes on where the last
# stopped: airway's mirrored default and LUnet Nf=32 at 8,000 and 16,000 steps (docs/learning.md, "Still open"
# item 3). They train in bf16 like the airway runs they are read against: the CPU must have native bf16
# (`lscpu | grep avx512_bf16`); converge.py refuses at once otherwise (a GPU run, --device cuda, needs ledgers of
# its own: the ledgers hold the bf16 budget). The finished studies
# (MNI at 2,000-8,000 steps, the paper study, airway without mirroring) left this queue when they were done:
# their commands are in README ("Which Nf") and docs/learning.md, and rerunning them reads their ledgers.
# Run it detached on an otherwise idle machine; commit docs/ledgers/ as runs finish:
#   setsid nohup bash scripts/long_runs.sh >> ~/.cache/nnunet-lean/long_runs.out 2>&1 < /dev/null &
# touch ~/.cache/nnunet-lean/PAUSE to hold the running training between two epochs (tests, timings), rm it to go on.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup_env.sh" | tail -n 1)
cd "$root"
export NNUNET_LEAN_PAUSE_FILE="${NNUNET_LEAN_PAUSE_FILE:-$HOME/.cache/nnunet-lean/PAUSE}"
py="$venv/bin/python"
date
held=(--dataset airway --num-new 100 --precision bf16 --ledger docs/ledgers/heldout_airway.json)
# the mirrored pair anew at 8,000 and 16,000 steps ("Still open" item 3: is the default converged at 16,000
# steps, and is Nf=32, converged at 8,000, within 1.0 point of it per label on the 110 cases?), each budget's
# held-out cases recorded as it ends
mirrored=(--dataset airway --networks default lean32 --start-epochs 160 --precision bf16
          --ledger docs/ledgers/converge_airway.json)
"$py" scripts/converge.py "${mirrored[@]}" --max-level 0
"$py" scripts/heldout_dice.py "${held[@]}"
"$py" scripts/converge.py "${mirrored[@]}" --max-level 1
"$py" scripts/heldout_dice.py "${held[@]}"
echo "long runs done"; date
