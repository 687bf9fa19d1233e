"""Controlled runs for the learning issue (docs/learning.md): which recipe lets small networks leave
the all-background start, with per-epoch diagnostics of every deep-supervision output and decoder stage.

    python scripts/learning_probe.py [--workdir ~/.cache/nnunet-lean/probe] [--epochs 10 --iters 50]
                                     [--folds 1] [--plans UnetNf4_Scaled75 ...] [--recipes SGD Adam ...]

The paper study's data (hippocampus-like, 40 training / 10 test cases at 64^3, dataset 980) and plans
(nnU-Net's 5-stage plan at the paper's widths, made with `nnunet_lean modify-plans`); each run is a stock
`nnUNetv2_train` of a probe trainer (scripts/bench_trainers/nnunet_lean_probe_trainers.py), then predict,
evaluate and deep-supervision Dice as in the study. Resumable. Writes results.md (one row per run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nnunet_lean.errors import exit_on_error
from nnunet_lean.jsonio import write_text_atomically
from nnunet_lean.study import Study
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
RECIPES = ["SGD", "Adam", "SGDDice", "SGDPrior", "SGD3x", "Paper"]  # nnUNetTrainerProbe<recipe>
DATASET, NAME = 980, "Dataset980_LeanHippocampus"
DERIVED = {"UnetNf4": ("nnUNetPlans", ["--base", "4"]), "LUnetNf8": ("nnUNetPlans", ["--nf", "8"]),
           "LUnetNf4": ("nnUNetPlans", ["--nf", "4"]), "UnetNf4_Scaled75": ("UnetNf4", ["--scale", "0.75"]),
           "UnetNf4_Scaled50": ("UnetNf4", ["--scale", "0.5"]), "UnetNf4_Scaled25": ("UnetNf4", ["--scale", "0.25"])}


def summary_row(run: dict, fold_dir: Path) -> dict:
    """One run: when each output left background, and the state of the full-resolution output."""
    probe = [json.loads(line) for line in (fold_dir / "probe.jsonl").read_text().splitlines()]
    n_out = len(probe[0]["outputs"])
    first = []
    for o in range(n_out):
        e = next((p["epoch"] for p in probe if p["outputs"][o]["pred_fg_fraction"] > 0.1 *
                  p["outputs"][o]["target_fg_fraction"]), None)
        first.append("never" if e is None else str(e))
    last = probe[-1]
    full, last_dec = last["outputs"][0], last["decoder"][sorted(last["decoder"])[-1]]
    grads = last["grad_norm"]
    heads = sorted(k for k in grads if k.startswith("head"))
    return {"plans": run["plans"], "recipe": run["trainer"].replace("nnUNetTrainerProbe", ""), "fold": run["fold"],
            "params": f"{run['parameters']:,}", "test Dice": f"{run['dice']:.3f}",
            "val Dice per output (full first)": " / ".join(f"{d:.2f}" for d in run["validation_dice_per_output"]),
            "epoch each output predicts fg (full first)": " / ".join(first),
            "final train loss": f"{last['train_loss']:.3f}",
            "full res: p(fg) on fg / on bg": f"{full['p_fg_on_fg']:.3f} / {full['p_fg_on_bg']:.4f}",
            "last decoder block: constant ch / ch": f"{last_dec.get('constant_channels')} / {last_dec.get('channels')}",
            "head grad norms (coarse..full), last epoch": " / ".join(f"{grads[h]:.2g}" for h in heads)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/nnunet-lean/probe"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--folds", type=int, nargs="+", default=[1])
    ap.add_argument("--plans", nargs="+", default=["UnetNf4_Scaled75", "UnetNf4_Scaled25", "LUnetNf4", "UnetNf4"],
                    choices=sorted(DERIVED))
    ap.add_argument("--recipes", nargs="+", default=["SGD", "Adam"], choices=RECIPES,
                    help="SGD, Adam: nnU-Net's two optimizers; SGDDice, SGDPrior, SGD3x: SGD with one change (Dice "
                         "loss only, prior-initialised heads, 3x learning rate); Paper: the LUnet paper's recipe")
    args = ap.parse_args()
    study = Study(args.workdir, str(BIN), str(TRAINERS), {"epochs": args.epochs, "iters": args.iters})
    study.prepare(DATASET, NAME, ["-n", "40", "--num-test", "10", "--size", "64"])
    pre = study.folders(NAME)[1]
    for target in args.plans:
        for name in ([DERIVED[target][0]] if DERIVED[target][0] != "nnUNetPlans" else []) + [target]:
            if not (pre / f"{name}.json").exists():
                source, how = DERIVED[name]
                study.step(f"plans_{name}", ["nnunet_lean", "modify-plans", "-d", str(DATASET), "-p", source,
                                             "-o", name, "-c", "3d_fullres", *how])
    rows = []
    for fold in args.folds:
        for plans in args.plans:
            for recipe in args.recipes:
                trainer = f"nnUNetTrainerProbe{recipe}"
                run = study.train_and_test(DATASET, NAME, plans, trainer, fold)
                rows.append(summary_row(run, Path(run["fold_dir"])))
                header = (f"`python scripts/learning_probe.py --epochs {args.epochs} --iters {args.iters}` "
                          f"(dataset 980, 40 training / 10 test cases at 64^3; {len(rows)} runs)")
                write_text_atomically(header + "\n\n" + markdown_table(rows) + "\n",
                                      str(study.work / "results.md"))
                print(markdown_table(rows[-1:]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "learning_probe.py"))
