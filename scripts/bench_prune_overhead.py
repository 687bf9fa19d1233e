"""Cost of one STAMP pruning step (ranking + surgery + optimizer rebuild) against a plain nnU-Net
training epoch of the same network, measured in ONE stock `nnUNetv2_train` run on CPU.

    python scripts/bench_prune_overhead.py [--size 32] [--plans nnUNetPlans]

Epochs 0 and 2 are plain nnU-Net epochs (250 + 50 iterations); the pruning step runs at the start
of epoch 1 (inside its logged duration) and times itself (pruning_history.json, "seconds").
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from nnunet_lean import commands, runs
from nnunet_lean.errors import exit_on_error
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINER = "nnUNetTrainerSTAMPOverheadBench"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="bench_output/prune_overhead")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--plans", default="nnUNetPlans", choices=["nnUNetPlans", "nnUNetLeanPlans"])
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    env = commands.nnunet_environment(str(work), str(BIN))
    train_env = dict(commands.nnunet_environment(str(work), str(BIN), training=True),
                     nnUNet_extTrainer=str(Path(__file__).resolve().parent / "bench_trainers"))
    step = commands.run_steps(str(work / "logs"), env)
    step("dataset", ["nnunet_lean", "make-dataset", "-d", "991", "-n", "20", "--num-test", "0",
                     "--size", str(args.size)])
    planner = ["-pl", "LeanPlanner"] if args.plans == "nnUNetLeanPlans" else []
    step("plan", ["nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
                  *planner])
    step("train", ["nnUNetv2_train", "991", "3d_fullres", "0", "-tr", TRAINER, "-p", args.plans,
                   "-device", "cpu"], train_env)

    fold = work / "results" / "Dataset991_LeanHippocampus" / f"{TRAINER}__{args.plans}__3d_fullres" / "fold_0"
    ckpt = runs.TrainedFold.open(fold).load("checkpoint_final.pth")
    epochs = runs.epoch_seconds(ckpt)
    history = json.loads((fold / "pruning_history.json").read_text())
    prune = history["steps"][0]
    plain = statistics.median([epochs[0], epochs[2]])
    print(markdown_table([{
        "network": f"{args.plans} at {args.size}^3", "params before/after": f"{history['initial_params']:,} / "
        f"{prune['params']:,}", "plain epoch (s)": f"{plain:.1f}", "prune step (s)": f"{prune['seconds']:.2f}",
        "prune step / epoch": f"{100 * prune['seconds'] / plain:.1f} %"}]))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "bench_prune_overhead.py"))
