"""Demo: nnU-Net default vs Lean U-Net, trained and tested on CPU through the stock commands.

Run through scripts/demo.sh (which builds the venv first). Steps: synthetic dataset ->
nnUNetv2_plan_and_preprocess (nnUNetPlans, then -pl LeanPlanner) -> nnUNetv2_train fold 0 with
nnUNetTrainerVanillaAdamQuick (the lean recipe, the same for both) on each plans -> nnUNetv2_predict on
the test cases -> nnUNetv2_evaluate_folder
-> `nnunet_lean report` (peak tensor memory of a training step, both networks in one process)
-> a table of parameters, seconds per epoch, training-step memory and test Dice.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from nnunet_lean import commands, runs
from nnunet_lean.errors import exit_on_error
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
DATASET_ID = 990
TRAINER = "nnUNetTrainerVanillaAdamQuick"   # one recipe for both rows: the lean recipe (nnunet_lean.recipe)
# (label, plans, the trainer that builds the same network on nnUNetPlans for the report)
RUNS = [("nnU-Net default", "nnUNetPlans", "nnU-Net default (nnUNetTrainer)"),
        ("Lean U-Net (LeanPlanner)", "nnUNetLeanPlans", "nnUNetTrainerLean")]
MEMORY = "train step tensor peak MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="demo_output", help="where nnUNet_raw/preprocessed/results go")
    ap.add_argument("--size", type=int, default=32, help="image edge in voxels")
    ap.add_argument("--num-train", type=int, default=20)
    ap.add_argument("--num-test", type=int, default=5)
    args = ap.parse_args()

    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    env = commands.nnunet_environment(str(work), str(BIN))
    train_env = commands.nnunet_environment(str(work), str(BIN), training=True)
    step = commands.run_steps(str(work / "logs"), env)

    d = str(DATASET_ID)
    step("dataset", ["nnunet_lean", "make-dataset", "-d", d, "-n", str(args.num_train),
                     "--num-test", str(args.num_test), "--size", str(args.size)])
    raw = work / "raw" / "Dataset990_LeanHippocampus"
    step("plan_default", ["nnUNetv2_plan_and_preprocess", "-d", d, "-c", "3d_fullres", "-np", "1", "-npfp", "1"])
    step("plan_lean", ["nnUNetv2_plan_and_preprocess", "-d", d, "-pl", "LeanPlanner", "-c", "3d_fullres",
                       "-np", "1", "-npfp", "1"])
    # the LeanPlanner network is nnUNetPlans' topology at Nf = 32, which nnUNetTrainerLean builds on nnUNetPlans
    step("report", ["nnunet_lean", "report", "-d", d, "-c", "3d_fullres", "-p", "nnUNetPlans",
                    "-tr", "nnUNetTrainerLean", "--predict-repeats", "1", "-o", str(work / "report")])
    memory = {r["label"]: r["train_step_peak_mb"] for r in json.loads((work / "report.json").read_text())["results"]}
    rows = []
    for label, plans, report_label in RUNS:
        step(f"train_{plans}", ["nnUNetv2_train", d, "3d_fullres", "0", "-tr", TRAINER, "-p", plans,
                                "-device", "cpu"], train_env)
        pred = work / f"pred_{plans}"
        step(f"predict_{plans}", ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", d,
                                  "-c", "3d_fullres", "-tr", TRAINER, "-p", plans, "-f", "0", "-device", "cpu",
                                  "-npp", "1", "-nps", "1"])
        step(f"evaluate_{plans}", ["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred),
                                   "-djfile", str(raw / "dataset.json"),
                                   "-pfile", str(work / "preprocessed" / raw.name / f"{plans}.json"), "-np", "1"])
        ckpt = runs.TrainedFold.open(runs.fold_folder(work / "results" / raw.name, TRAINER, plans, "3d_fullres", 0)
                                     ).load("checkpoint_final.pth")
        rows.append({"model": label, "plans": plans, "parameters": runs.checkpoint_parameters(ckpt),
                     "train s/epoch": runs.median_epoch_seconds(ckpt), MEMORY: memory[report_label],
                     "test Dice": runs.foreground_dice(pred / "summary.json")})
    base = dict(rows[0])
    for r in rows:
        r["params ratio"] = f"{r['parameters'] / base['parameters']:.3f}"
        r["time ratio"] = f"{r['train s/epoch'] / base['train s/epoch']:.2f}"
        r["memory ratio"] = f"{r[MEMORY] / base[MEMORY]:.2f}"
        r["parameters"] = f"{r['parameters']:,}"
        r["train s/epoch"] = f"{r['train s/epoch']:.1f}"
        r[MEMORY] = f"{r[MEMORY]:.0f}"
        r["test Dice"] = f"{r['test Dice']:.3f}"
    print(f"\n{args.num_train} training / {args.num_test} test cases at {args.size}^3, fold 0, {TRAINER} "
          f"(the lean recipe, nnU-Net's VanillaAdam, for both; CPU, {os.cpu_count()} cores). Memory: peak of live "
          f"tensors in one training step (parameters, "
          f"gradients, optimizer state, activations) at the plan's patch and batch, both networks measured in "
          f"one process by `nnunet_lean report` (the process's resident size would mostly be PyTorch itself)\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "demo.py"))
