#!/usr/bin/env bash
# The learning issue's long studies, one after another, each resumable and each recording its finished runs in
# a committed ledger (docs/ledgers/), so that a new machine (no ~/.cache/nnunet-lean) goes on where the last
# stopped: MNI 5 mm at 2,000 steps, the paper study (33 runs) and its summary, then MNI at 4,000 and 8,000 steps
# (fp32), then airway's left / right control and the default's convergence there (bf16: the CPU must have native
# bf16, as the mirrored runs of 2026-11-30 had).
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
mni=(--dataset mni --networks default lean32 lean16 lean8 --start-epochs 40 --precision fp32
     --ledger docs/ledgers/converge_mni.json)
# the first MNI budget, then the paper study (short runs, each recorded as it ends), then MNI's doubled budget
# (the default's run there takes ~3 h: it goes last so that a cut-off costs the fewest finished hours)
"$py" scripts/converge.py "${mni[@]}" --max-level 0
"$py" scripts/reproduce_lunet.py --ledger docs/ledgers/paper_study.json
"$py" scripts/reproduce_lunet.py --summary-only --ledger docs/ledgers/paper_study.json
"$py" scripts/converge.py "${mni[@]}" --max-level 1
# 8,000 steps for the networks that still moved >= 0.5 points at 4,000 (converge.py skips the converged ones),
# the goal network Nf=32 first (~2.2 h): a cut-off then costs the cheaper Nf=16 run
"$py" scripts/converge.py "${mni[@]}" --max-level 2 --first lean32
# airway 48^3, the left / right control (docs/learning.md, "Still open" item 4): the default and LUnet Nf=32 at
# 8,000 steps without mirroring, on 110 held-out cases, in bf16 like the mirrored runs they are read against
# (precision.py refuses bf16 on a CPU without it: then ~17 h in fp32, --precision fp32). Nf=32 first, its held-out
# cases predicted and recorded as soon as it ends (a wiped cache then costs no finished run), then the default
air=(--dataset airway --start-epochs 160 --max-level 0 --precision bf16 --ledger docs/ledgers/converge_airway.json)
held=(--dataset airway --num-new 100 --precision bf16 --ledger docs/ledgers/heldout_airway.json)
"$py" scripts/converge.py "${air[@]}" --networks lean32_nomirror
"$py" scripts/heldout_dice.py "${held[@]}"
"$py" scripts/converge.py "${air[@]}" --networks default_nomirror lean32_nomirror
"$py" scripts/heldout_dice.py "${held[@]}"
# then the mirrored pair anew at 8,000 and 16,000 steps ("Still open" item 3: is the default converged at 16,000
# steps, and is Nf=32, converged at 8,000, within 1.0 point of it per label on the 110 cases?), each budget's
# held-out cases recorded as it ends
mirrored=(--dataset airway --networks default lean32 --start-epochs 160 --precision bf16
          --ledger docs/ledgers/converge_airway.json)
"$py" scripts/converge.py "${mirrored[@]}" --max-level 0
"$py" scripts/heldout_dice.py "${held[@]}"
"$py" scripts/converge.py "${mirrored[@]}" --max-level 1
"$py" scripts/heldout_dice.py "${held[@]}"
echo "long runs done"; date
