"""The pruning-collapse probe: the paper study's STAMP (activation) runs with Dice measured around every cut.

    python scripts/pruning_probe.py [--precision fp32|bf16] [--folds 1]
                                    [--trainers nnUNetTrainerSTAMPActivationProbeBudget ...]

Trains each trainer (scripts/bench_trainers) on UnetNf4 in the paper study's folder (``reproduce_lunet.py
--precision P --prepare-only`` makes it: ~/.cache/nnunet-lean/repro or repro_bf16; its budget, recipe and
precision), tests it as the study does, and writes probe.md / probe.json there (this invocation's runs): per run
its test Dice and, per pruning step, the Dice of the full-resolution output on 10 validation batches right before
the cut and right after it (no training in between; "-" for a trainer that does not probe), then nnU-Net's
pseudo-Dice at the end of the step's epoch. A drop at the cut is the cut's; a drop only
after the epoch is the training that followed (the fresh Adam of "Probe" against the carried moments of
"KeepAdam"). docs/learning.md, "Fold 1: a collapse under the floor too". Resumable: finished runs are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nnunet_lean import runs
from nnunet_lean.errors import LeanError, exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.study import Study
from nnunet_lean.tables import markdown_table

from reproduce_lunet import BIN, DATASET, NAME, TRAINERS, study_settings

PLANS = "UnetNf4"
TRAINER_NAMES = ["nnUNetTrainerSTAMPActivationProbeBudget", "nnUNetTrainerSTAMPActivationKeepAdamBudget"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[1])
    ap.add_argument("--trainers", nargs="+", default=TRAINER_NAMES)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="the study's precision, which picks its default folder (bf16 needs a CPU with native bf16)")
    ap.add_argument("--workdir", default=None, help="the paper study's folder (default: the precision's folder)")
    args = ap.parse_args()
    study_args = argparse.Namespace(epochs=30, iters=50, size=64, num_train=40, num_test=10, recipe="lean",
                                    precision=args.precision, workdir=args.workdir)
    work, _ = study_settings(study_args)
    if not (Path(work) / "budget.json").exists():
        raise LeanError(f"{work} holds no paper study: run scripts/reproduce_lunet.py --precision {args.precision} "
                        "--prepare-only first")
    study = Study(work, str(BIN), str(TRAINERS), json.loads((Path(work) / "budget.json").read_text()),
                  create=False)
    rows = []
    for trainer in args.trainers:
        for fold in args.folds:
            r = study.train_and_test(DATASET, NAME, PLANS, trainer, fold)
            rows.append({"trainer": trainer, "fold": fold, "dice": r["dice"],
                         "validation_dice_per_output": r["validation_dice_per_output"],
                         "steps": step_rows(Path(r["fold_dir"]))})
            summarise(rows, Path(work))
    return 0


def step_rows(fold_dir: Path) -> list:
    """Per pruning step: its epoch, the probe's Dice before and after the cut, the epoch's pseudo-Dice."""
    fold = runs.TrainedFold.open(fold_dir)
    pseudo = fold.training_log()["mean_fg_dice"]
    return [{"step": s["step"], "epoch": s["epoch"], "before_cut": s.get("probe_dice_before_cut"),
             "after_cut": s.get("probe_dice_after_cut"),
             "after_epoch": float(pseudo[s["epoch"]]) if s["epoch"] < len(pseudo) else None,
             "narrowest": min(s["widths"].values())}
            for s in fold.pruning_history()["steps"]]


def summarise(rows: list, work: Path) -> None:
    def f(x):
        return "-" if x is None else f"{x:.3f}"
    lines = ["Pruning probe (`python scripts/pruning_probe.py`): Dice of the full-resolution output on 10 validation "
             "batches right before / right after each cut, then the pseudo-Dice after the step's epoch", ""]
    for r in rows:
        lines += [f"**{r['trainer']}, fold {r['fold']}**: test Dice {r['dice']:.3f}, validation per output "
                  + " / ".join(f(d) for d in r["validation_dice_per_output"] or []), "",
                  markdown_table([{"step (epoch)": f"{s['step']} ({s['epoch']})", "before the cut": f(s["before_cut"]),
                                   "after the cut": f(s["after_cut"]), "after the epoch": f(s["after_epoch"]),
                                   "narrowest unit": s["narrowest"]} for s in r["steps"]]), ""]
    write_text_atomically("\n".join(lines), str(work / "probe.md"))
    write_json_atomically(rows, str(work / "probe.json"), indent=1)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "pruning_probe.py"))
