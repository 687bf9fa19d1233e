"""nnU-Net's default plans against LeanPlanner's on the airway-like and MNI datasets: speed and Dice.

    python scripts/compare_lean_default.py [--datasets airway mni] [--epochs 10 --iters 20]
                                           [--workdir ~/.cache/nnunet-lean/bench]

Per dataset, through the stock commands: make the dataset, nnUNetv2_plan_and_preprocess (3d_fullres),
nnUNetv2_plan_experiment -pl LeanPlanner and -pl LeanPlannerNf16; then
`nnunet_lean report -d D -p nnUNetPlans -tr nnUNetTrainerLean nnUNetTrainerLean_Nf16` (the speed
ratios on the default plans' topology, patch and batch: run it on an otherwise idle machine); then
fold 0 of nnUNetPlans, nnUNetLeanPlans and nnUNetLeanNf16Plans trained with one fixed budget and tested
on the held-out cases. Resumable: every finished step is skipped. Writes results.md and results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nnunet_lean.errors import exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.study import Study
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
DATASETS = {  # kind: (id, name, make-dataset arguments)
    "airway": (991, "Dataset991_LeanAirway", ["--kind", "airway", "--size", "64"]),
    "mni": (992, "Dataset992_LeanMNI", ["--kind", "mni", "--spacing", "3"]),
}
# (label, plans, the trainer that builds the same network on nnUNetPlans for the report)
NETWORKS = [("nnU-Net default", "nnUNetPlans", "nnU-Net default (nnUNetTrainer)"),
            ("LUnet Nf=32 (LeanPlanner)", "nnUNetLeanPlans", "nnUNetTrainerLean"),
            ("LUnet Nf=16 (LeanPlannerNf16)", "nnUNetLeanNf16Plans", "nnUNetTrainerLean_Nf16")]
PLANNERS = {"nnUNetLeanPlans": "LeanPlanner", "nnUNetLeanNf16Plans": "LeanPlannerNf16"}


def label_names(dataset_json: Path) -> dict:
    """summary.json's label keys ("1", "2", ...) to the names of dataset.json."""
    return {str(v): k for k, v in json.loads(dataset_json.read_text())["labels"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None,
                    help="default ~/.cache/nnunet-lean/bench (bench_sgd with --recipe nnunet: a folder holds one budget)")
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["airway", "mni"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--num-train", type=int, default=30)
    ap.add_argument("--num-test", type=int, default=10)
    ap.add_argument("--recipe", choices=["lean", "nnunet"], default="lean",
                    help="every network's recipe: lean (nnUNetTrainerBudget: Adam 1e-2, poly) or nnunet "
                         "(nnUNetTrainerBudgetSGD: nnU-Net's SGD; the README's figures before the lean recipe)")
    ap.add_argument("--reports-only", action="store_true", help="stop after the speed reports")
    ap.add_argument("--device", default="cpu", help="nnU-Net's -device for training and prediction (cpu, cuda)")
    args = ap.parse_args()
    args.workdir = args.workdir or os.path.expanduser(
        "~/.cache/nnunet-lean/bench" + ("_sgd" if args.recipe == "nnunet" else ""))
    study = Study(args.workdir, str(BIN), str(TRAINERS),
                  {k: getattr(args, k) for k in ("epochs", "iters", "num_train", "num_test", "recipe")},
                  device=args.device)
    trainer = "nnUNetTrainerBudget" + ("SGD" if args.recipe == "nnunet" else "")

    for kind in args.datasets:  # speed first: nothing else of the study runs beside it
        d, name, make = DATASETS[kind]
        study.prepare(d, name, ["-n", str(args.num_train), "--num-test", str(args.num_test), *make])
        pre = study.folders(name)[1]
        for plans, planner in PLANNERS.items():
            if not (pre / f"{plans}.json").exists():
                study.step(f"plan_{d}_{planner}", ["nnUNetv2_plan_experiment", "-d", str(d), "-pl", planner])
        out = study.work / "reports" / name
        if not out.with_suffix(".json").exists():
            study.step(f"report_{d}", ["nnunet_lean", "report", "-d", str(d), "-c", "3d_fullres", "-p", "nnUNetPlans",
                                       "-tr", *[t for _, _, t in NETWORKS[1:]], "-o", str(out)])
    if args.reports_only:
        return 0

    rows, runs = [], []
    for kind in args.datasets:
        d, name, _ = DATASETS[kind]
        speed = {r["label"]: r for r in json.loads((study.work / "reports" / f"{name}.json").read_text())["results"]}
        base_dice = None
        names = label_names(study.folders(name)[0] / "dataset.json")
        for label, plans, report_label in NETWORKS:
            run = dict(dataset=name, network=label, **study.train_and_test(d, name, plans, trainer, 0))
            runs.append(run)
            base_dice = run["dice"] if base_dice is None else base_dice
            s = speed[report_label]
            rows.append({"dataset": name, "network": label, "parameters": f"{run['parameters']:,}",
                         "test Dice": f"{run['dice']:.3f}", "Dice - default (points)": f"{100 * (run['dice'] - base_dice):+.1f}",
                         "test Dice per label": ", ".join(f"{names.get(k, k)} {v:.2f}"
                                                          for k, v in run["dice_per_label"].items()),
                         "train step ratio": f"{s['train_step_s_ratio']:.2f}",
                         "peak train memory ratio": f"{s['train_step_peak_mb_ratio']:.2f}",
                         "prediction ratio": f"{s['predict_case_s_ratio']:.2f}",
                         "FLOPs ratio": f"{s['gflops_forward_ratio']:.2f}"})
    header = (f"fold 0, {args.num_train} training / {args.num_test} test cases, {trainer} "
              f"({args.epochs} epochs x {args.iters} iterations), CPU; ratios from `nnunet_lean report` on "
              f"nnUNetPlans (same topology, patch and batch)")
    table = markdown_table(rows)
    write_text_atomically(header + "\n\n" + table + "\n", str(study.work / "results.md"))
    write_json_atomically({"budget": vars(args), "runs": runs}, str(study.work / "results.json"), indent=1)
    print(header + "\n\n" + table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "compare_lean_default.py"))
