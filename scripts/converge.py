"""Converged parity: default vs LUnet trained until doubling the steps moves validation Dice < 0.5 points.

    python scripts/converge.py --dataset airway [--start-epochs 40 --iters 50] [--max-level 3] [--precision bf16]
                               [--networks default default_sgd lean32 lean16 lean8] [--workdir ~/.cache/nnunet-lean/converge]
                               [--ledger docs/ledgers/converge_DATASET.json]

Per dataset (airway-like at 48^3, or MNI at 5 mm; 30 training / 10 test cases): nnUNetPlans and the
LeanPlanner / LeanPlannerNf16 / LeanPlannerNf8 plans (Nf=8: to find the smallest width that keeps up); fold 0
of every network trained by the stock nnUNetv2_train with a budget of E x ITERS steps, E = start-epochs x
2^level (each level a resumable Study of its own), tested on the held-out cases (nnUNetv2_evaluate_folder).
A network is converged at level L when its validation Dice (nnU-Net's own final validation of fold 0,
validation/summary.json) moved by less than 0.5 points from level L-1 and is at least 0.05 (a network stuck
at background does not move either); levels go on for the networks not yet converged, up to --max-level.
Each run's Dice on its training cases too (`nnunet_lean deep-supervision-dice --cases train`, full-resolution
output): a gap there is capacity or optimisation. Recipes: "default" and the lean networks use the lean
recipe (nnUNetTrainerBudget), "default_sgd" nnU-Net's (nnUNetTrainerBudgetSGD), "*_adamw" nnU-Net's
nnUNetTrainerAdam optimizer (AdamW: decoupled decay, under which unused stages do not die; nnUNetTrainerBudgetAdamW),
"*_nomirror" the lean recipe without mirroring (nnUNetTrainerBudgetNoMirroring: position then tells left from right).
Writes results.md / results.json, and `nnunet_lean dice-vs-time` of every network at the highest budget all of
them trained (the same epochs, so the same poly schedule; reference: the default) as dice_vs_time.png/.md/.json,
and `nnunet_lean report` (in-process step ratio of the same networks on nnUNetPlans; rerun when the networks
change) as report.md. Run it on an otherwise idle machine: the times are compared. The runs' clocks still come
from separate processes (often sessions): `scripts/epoch_cost.py --study WORKDIR/DATASET_PRECISION/E<epochs>`
measures each network's epoch cost side by side, which times dice_vs_time's epochs ratio gives the time ratio.
--precision bf16 (default): on a CPU every training step runs under bf16 autocast (nnunet_lean.precision; about
half the time of fp32 there, the counterpart of nnU-Net's fp16 autocast on a GPU) and the report times its steps
the same way; validation, test predictions and checkpoints stay fp32. Each precision has its own folder
(WORKDIR/DATASET_PRECISION): `--precision fp32 --max-level 0 --networks default lean32` is the control that
shows what bf16 changes in Dice. --device cuda: nnU-Net's own fp16 autocast, folder WORKDIR/DATASET_cuda.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path

from nnunet_lean.errors import exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.measure import dice_time
from nnunet_lean.study import Study, training_steps_text
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
DATASETS = {"airway": (995, "Dataset995_LeanAirway48", ["--kind", "airway", "--size", "48", "--name", "LeanAirway48"]),
            # 5 mm: patch 40 x 48 x 40 (the whole head), a default fp32 step 2.9 s on a 2-core CPU without native
            # bf16; 4 mm (48 x 64 x 56) took 7.8 s there, too slow for two budgets of four networks (docs/learning.md)
            "mni": (997, "Dataset997_LeanMNI5mm", ["--kind", "mni", "--spacing", "5", "--name", "LeanMNI5mm"])}
# key: (label, plans, trainer, planner that writes the plans or None)
NETWORKS = {"default": ("nnU-Net default, lean recipe", "nnUNetPlans", "nnUNetTrainerBudget", None),
            "default_sgd": ("nnU-Net default, nnU-Net's SGD", "nnUNetPlans", "nnUNetTrainerBudgetSGD", None),
            "lean32": ("LUnet Nf=32, lean recipe", "nnUNetLeanPlans", "nnUNetTrainerBudget", "LeanPlanner"),
            "lean16": ("LUnet Nf=16, lean recipe", "nnUNetLeanNf16Plans", "nnUNetTrainerBudget", "LeanPlannerNf16"),
            "lean8": ("LUnet Nf=8, lean recipe", "nnUNetLeanNf8Plans", "nnUNetTrainerBudget", "LeanPlannerNf8"),
            "lean64": ("LUnet Nf=64, lean recipe", "nnUNetLeanNf64Plans", "nnUNetTrainerBudget", "LeanPlannerNf64"),
            # the dead-stage control: nnU-Net's nnUNetTrainerAdam optimizer (AdamW, decoupled decay)
            "default_adamw": ("nnU-Net default, AdamW", "nnUNetPlans", "nnUNetTrainerBudgetAdamW", None),
            "lean32_adamw": ("LUnet Nf=32, AdamW", "nnUNetLeanPlans", "nnUNetTrainerBudgetAdamW", "LeanPlanner"),
            "lean16_adamw": ("LUnet Nf=16, AdamW", "nnUNetLeanNf16Plans", "nnUNetTrainerBudgetAdamW",
                             "LeanPlannerNf16"),
            # the left / right control: no mirroring in training, so position tells left from right
            "default_nomirror": ("nnU-Net default, lean recipe, no mirroring", "nnUNetPlans",
                                 "nnUNetTrainerBudgetNoMirroring", None),
            "lean32_nomirror": ("LUnet Nf=32, lean recipe, no mirroring", "nnUNetLeanPlans",
                                "nnUNetTrainerBudgetNoMirroring", "LeanPlanner")}
# the same networks on nnUNetPlans (the lean planners keep nnU-Net's patch and batch): `nnunet_lean report`
REPORT_TRAINERS = {"default": None, "default_sgd": None, "lean32": "nnUNetTrainerLean",
                   "lean16": "nnUNetTrainerLean_Nf16", "lean8": "nnUNetTrainerLean_Nf8", "lean64": "nnUNetTrainerLean_Nf64",
                   "default_adamw": None, "lean32_adamw": None, "lean16_adamw": None,   # another recipe, same networks
                   "default_nomirror": None, "lean32_nomirror": None}
# a training step's cost relative to the default's, per plans (fp32, MNI 5 mm and airway 48^3, `nnunet_lean
# report`; other plans about 1 or more): a level trains its cheapest networks first, so that a session cut off
# inside a level has recorded the most finished runs in the ledger (the tables keep --networks' order)
STEP_COST = {"nnUNetLeanNf8Plans": 0.13, "nnUNetLeanNf16Plans": 0.27, "nnUNetLeanPlans": 0.71}
PARITY = 0.01  # issue 14's goal: within 1.0 point of the default's test Dice, per label
MOVE = 0.005   # converged: doubling the steps moves validation Dice by less than this
LEARNED = 0.05  # ... at a validation Dice of at least this


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="airway")
    ap.add_argument("--start-epochs", type=int, default=40)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--max-level", type=int, default=3)
    ap.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["default", "default_sgd", "lean32",
                                                                              "lean16", "lean8"])
    ap.add_argument("--first", nargs="+", choices=sorted(NETWORKS), default=[], metavar="NETWORK",
                    help="train these networks first within each level (then the cheapest first): the runs a cut-off "
                         "must not cost, e.g. the goal network of a long last budget")
    ap.add_argument("--num-train", type=int, default=30)
    ap.add_argument("--num-test", type=int, default=10)
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/nnunet-lean/converge"))
    ap.add_argument("--ledger", default=None, metavar="JSON",
                    help="record every finished run's result in a ledger (nnunet_lean.ledger; commit it), one file per "
                         "budget level: X.json becomes X.E<epochs>.json; a run recorded there is not trained again where "
                         "its folders are gone (its curve then leaves dice_vs_time out)")
    ap.add_argument("--device", default="cpu", help="nnU-Net's -device for training and prediction (cpu, cuda)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="training steps on a CPU (a GPU uses nnU-Net's own fp16 autocast either way)")
    args = ap.parse_args()
    if args.max_level < 0:
        ap.error("--max-level must be 0 or more (0: the first budget only)")
    d, name, make = DATASETS[args.dataset]
    # on a GPU nnU-Net's fp16 autocast trains either way: one folder per device there, per precision on a CPU
    precision = args.precision if args.device == "cpu" else "fp16"
    root = Path(args.workdir).expanduser() / f"{args.dataset}_{args.precision if args.device == 'cpu' else args.device}"
    results = {key: [] for key in args.networks}
    pending = list(args.networks)
    for level in range(args.max_level + 1):
        if not pending:
            break
        epochs = args.start_epochs * 2 ** level
        study = Study(str(root / f"E{epochs}"), str(BIN), str(TRAINERS),
                      {"epochs": epochs, "iters": args.iters, "num_train": args.num_train, "num_test": args.num_test,
                       "dataset": args.dataset, "precision": precision}, device=args.device,
                      ledger=args.ledger and str(Path(args.ledger).with_suffix(f".E{epochs}.json")))
        study.prepare(d, name, ["-n", str(args.num_train), "--num-test", str(args.num_test), *make])
        pre = study.folders(name)[1]
        for key in cheapest_first(pending, args.first):
            label, plans, trainer, planner = NETWORKS[key]
            if planner and not (pre / f"{plans}.json").exists():
                study.step(f"plan_{planner}", ["nnUNetv2_plan_experiment", "-d", str(d), "-pl", planner])
            r = study.train_and_test(d, name, plans, trainer, 0)
            r = dict(r, network=key, label=label, epochs=epochs, steps=epochs * args.iters)
            results[key].append(r)
            summarise(results, root, args)
        pending = [k for k in pending if not converged(results[k])]
    summarise(results, root, args)
    # the highest budget every network trained: the same number of epochs, so the same poly schedule
    level = min(len(rs) for rs in results.values()) - 1
    last = [results[k][level]["fold_dir"] for k in args.networks]
    reference = ["--reference", results["default"][level]["fold_dir"]] if "default" in results else []
    if len(last) > 1 and all(Path(f).is_dir() for f in last + reference[1:]):
        study.step("dice_vs_time", ["nnunet_lean", "dice-vs-time", *last, "-o", str(root / "dice_vs_time.png"),
                                    *reference])
    elif len(last) > 1 and all("curve" in results[k][level] for k in results):
        # some runs are only in the ledger: the same comparison from the curves it recorded
        curves = [results[k][level]["curve"] for k in args.networks]
        ref = results["default"][level]["curve"] if "default" in results else None
        dice_time.write(dice_time.compare_curves(curves, ref), str(root / "dice_vs_time.png"))
    # the in-process training-step ratio, to read beside the curves (their times come from separate processes)
    trainers = sorted({REPORT_TRAINERS[k] for k in args.networks} - {None})   # the report's first row: the default
    if trainers and not reported(root / "report.json", trainers):
        study.step("report", ["nnunet_lean", "report", "-d", str(d), "-p", "nnUNetPlans", "-tr", *trainers,
                              "--device", args.device, "-o", str(root / "report"),
                              *(["--cpu-bf16"] if args.precision == "bf16" and args.device == "cpu" else [])])
    return 0


def cheapest_first(keys: list, first: list = ()) -> list:
    """The networks of a level in training order: those named in `first` in that order, then the rest by their
    plans' STEP_COST, ties in the given order."""
    rest = sorted((k for k in keys if k not in first), key=lambda k: STEP_COST.get(NETWORKS[k][1], 1.0))
    return [k for k in first if k in keys] + rest


def reported(path: Path, trainers: list) -> bool:
    """`nnunet_lean report` already measured these trainers (its rows after the default's, in this order)."""
    return path.exists() and [r["label"] for r in json.loads(path.read_text())["results"][1:]] == trainers


def converged(rs: list) -> bool:
    """Doubling the steps moved validation Dice by < 0.5 points, and the network learned (two runs stuck at
    background do not move either)."""
    if len(rs) < 2 or None in (rs[-1].get("validation_dice"), rs[-2].get("validation_dice")):
        return False
    return rs[-1]["validation_dice"] >= LEARNED and abs(rs[-1]["validation_dice"] - rs[-2]["validation_dice"]) < MOVE


def within_parity(gaps: dict) -> bool:
    """No label more than PARITY below the default; decided on the gaps as printed (0.1 point), so a "-1.0"
    in the table is within, and a label without a Dice (NaN) is not."""
    return all(not math.isnan(g) and round(100 * g, 1) >= -100 * PARITY for g in gaps.values())


def gap(run: list, ref: list) -> str:
    """Mean paired per-case difference in points, +- twice its standard error (cases in the same order; a case
    where either lacks the label is left out)."""
    diff = [100 * (a - b) for a, b in zip(run, ref) if a is not None and b is not None]
    if not diff:
        return "-"
    se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return f"{statistics.fmean(diff):+.1f} +- {2 * se:.1f}"


def _fmt(dice) -> str:
    return "-" if dice is None else f"{dice:.3f}"


def _points(per_label: dict, ref: dict) -> str:
    """Per label, Dice minus the default's in points as the tables print it; "-" where either is missing.
    On the training cases: below the default there too, a gap is capacity or optimisation, not generalisation."""
    if not (per_label and ref):
        return "-"
    return ", ".join(f"{100 * (v - ref[k]):+.1f}" for k, v in per_label.items())


def summarise(results: dict, root: Path, args) -> None:
    rows = []
    base = results.get("default") or []
    for key, rs in results.items():
        for i, r in enumerate(rs):
            ref = next((b for b in base if b["epochs"] == r["epochs"]), None)
            rows.append({"network": r["label"], "steps": r["steps"], "parameters": f"{r['parameters']:,}",
                         "validation Dice": _fmt(r.get("validation_dice")),
                         "moved since half the steps (points)": "-" if not i or None in (
                             r.get("validation_dice"), rs[i - 1].get("validation_dice"))
                         else f"{100 * (r['validation_dice'] - rs[i - 1]['validation_dice']):+.1f}",
                         "converged": "yes" if converged(rs[:i + 1]) else "no",
                         "test Dice": f"{r['dice']:.3f}",
                         "test Dice per label": ", ".join(f"{v:.3f}" for v in r["dice_per_label"].values()),
                         "per label - default (points)": _points(r["dice_per_label"], ref and ref["dice_per_label"]),
                         "training Dice": _fmt(r.get("training_dice")),
                         "median epoch (s)": f"{r['median_epoch_s']:.1f}"})
    final = []
    for key, rs in results.items():
        if not rs or not base:
            continue
        r, ref = rs[-1], base[-1]
        gaps = {k: v - ref["dice_per_label"][k] for k, v in r["dice_per_label"].items()}
        final.append({"network (its last budget)": r["label"], "steps": r["steps"],
                      "converged": "yes" if converged(rs) else "no",
                      "test Dice per label": ", ".join(f"{v:.3f}" for v in r["dice_per_label"].values()),
                      f"per label - default at {ref['steps']} steps (points)":
                          _points(r["dice_per_label"], ref["dice_per_label"]),
                      "the same, per-case mean +- 2 SE": "-" if key == "default" or not (
                          r.get("dice_per_case") and ref.get("dice_per_case")) else "; ".join(
                          gap(r["dice_per_case"][k], ref["dice_per_case"][k]) for k in r["dice_per_case"]),
                      "within 1.0 point (or above), every label": "-" if key == "default" else
                      ("yes" if within_parity(gaps) else "no"),
                      "training Dice per label - default (points)":
                          _points(r.get("training_dice_per_label"), ref.get("training_dice_per_label"))})
    steps = training_steps_text(args.precision, args.device)
    command = (f"python scripts/converge.py --dataset {args.dataset} " +
               (f"--precision {args.precision}" if args.device == "cpu" else f"--device {args.device}"))
    header = (f"{args.dataset}, fold 0, {args.num_train} training / {args.num_test} test cases, "
              f"{args.iters} iterations per epoch, epochs doubling from {args.start_epochs}, {steps}; "
              f"converged = validation Dice moved < {100 * MOVE:.1f} points when the steps doubled (`{command}`)")
    text = header + "\n\n" + markdown_table(rows) + "\n"
    if final:
        text += "\nEach network at its last budget against the default at its last budget:\n\n" + markdown_table(final) + "\n"
    write_text_atomically(text, str(root / "results.md"))
    write_json_atomically({"args": vars(args), "results": results}, str(root / "results.json"), indent=1)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "converge.py"))
