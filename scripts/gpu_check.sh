#!/usr/bin/env bash
# The CUDA path through the stock CLI, in one command (not part of CI):
#   bash scripts/gpu_check.sh [WORKDIR]
# With CUDA: nnU-Net's torch.compile (nnUNet_compile=1) and fp16 autocast are on. Trains the default
# network, nnUNetTrainerLean and a short STAMP run (3 prune steps, the process interrupted after epoch 2
# and resumed with --c; then a second fold), predicts STAMP with -f 0 1, evaluates, and prints the
# report's ratios (absolute times mean something on a GPU). Without CUDA the same chain runs on CPU with
# tiny budgets (compile off: nnU-Net compiles only on CUDA), so the script is known to work.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/scripts/setup_env.sh" | tail -n 1)
export PATH="$venv/bin:$PATH"
work="$(mkdir -p "${1:-$root/bench_output/gpu_check}" && cd "${1:-$root/bench_output/gpu_check}" && pwd)"
rm -rf "$work"/{raw,preprocessed,results,pred,report*}
export nnUNet_raw="$work/raw" nnUNet_preprocessed="$work/preprocessed" nnUNet_results="$work/results"
export nnUNet_extTrainer="$root/scripts/bench_trainers" MPLBACKEND=Agg
if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    device=cuda size=64 export_env="nnUNet_compile=1 NNUNET_LEAN_CHECK_EPOCHS=10 NNUNET_LEAN_CHECK_ITERS=50"
    np=4
else
    device=cpu size=32 export_env="NNUNET_LEAN_CHECK_EPOCHS=6 NNUNET_LEAN_CHECK_ITERS=10 nnUNet_n_proc_DA=0"
    np=1
fi
export nnUNet_def_n_proc=$np
echo "[gpu_check] device=$device size=$size^3 workdir=$work" >&2
python -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

D=993
nnunet_lean make-dataset -d $D -n 16 --num-test 4 --size $size
nnUNetv2_plan_and_preprocess -d $D -c 3d_fullres -np $np -npfp $np > "$work/plan.log"
train() { env $export_env nnUNetv2_train $D 3d_fullres "$@" -device $device >> "$work/train.log" 2>&1; }
train 0 -tr nnUNetTrainerCheck
train 0 -tr nnUNetTrainerLeanCheck
set +e
NNUNET_LEAN_CHECK_INTERRUPT=2 train 0 -tr nnUNetTrainerSTAMPCheck
rc=$?
set -e
[ $rc -eq 3 ] || { echo "[gpu_check] the interrupted STAMP run exited $rc, not 3: see $work/train.log" >&2; exit 1; }
train 0 -tr nnUNetTrainerSTAMPCheck --c
train 1 -tr nnUNetTrainerSTAMPCheck
fold0="$nnUNet_results/Dataset${D}_LeanHippocampus/nnUNetTrainerSTAMPCheck__nnUNetPlans__3d_fullres/fold_0"
nnUNetv2_predict -i "$nnUNet_raw/Dataset${D}_LeanHippocampus/imagesTs" -o "$work/pred" -d $D -c 3d_fullres \
    -tr nnUNetTrainerSTAMPCheck -f 0 1 -device $device -npp 1 -nps 1 > "$work/predict.log" 2>&1
nnUNetv2_evaluate_folder "$nnUNet_raw/Dataset${D}_LeanHippocampus/labelsTs" "$work/pred" \
    -djfile "$nnUNet_raw/Dataset${D}_LeanHippocampus/dataset.json" \
    -pfile "$nnUNet_preprocessed/Dataset${D}_LeanHippocampus/nnUNetPlans.json" -np 1 > /dev/null
python - "$fold0" "$work/pred/summary.json" <<'PY'
import json, sys
history = json.load(open(f"{sys.argv[1]}/pruning_history.json"))
steps = history["steps"]
assert len(steps) == 3, f"expected 3 prune steps, got {len(steps)}"
assert [s["epoch"] for s in steps] == [1, 2, 3], [s["epoch"] for s in steps]
log = open(next(__import__("glob").iglob(f"{sys.argv[1]}/training_log_*.txt"))).read()
print(f"STAMP fold 0: prune steps opening epochs {[s['epoch'] for s in steps]} (interrupted after epoch 1, "
      f"resumed with --c), channels "
      f"{sum(history['initial_widths'].values())} -> {steps[-1]['channels_left']}; "
      f"torch.compile in log: {'Using torch.compile' in log}")
print(f"STAMP folds 0+1 test Dice: {json.load(open(sys.argv[2]))['foreground_mean']['Dice']:.3f}")
PY
nnunet_lean report -d $D -c 3d_fullres -tr nnUNetTrainerLean nnUNetTrainerLean_Nf16 --pruned "$fold0" \
    --device $device -o "$work/report"
echo "[gpu_check] done: $work" >&2
