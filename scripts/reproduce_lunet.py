"""The LUnet paper's study (Table II / Fig. 4) in a CPU-sized form, through the stock nnU-Net commands.

    python scripts/reproduce_lunet.py [--workdir ~/.cache/nnunet-lean/repro] [--epochs 30 --iters 50]
                                      [--recipe lean|nnunet] [--precision fp32|bf16] [--ledger JSON]

Hippocampus-like 64^3 data; nnU-Net's 5-stage plan with the paper's widths: Unet Nf=4 (4..64,
doubling), its linear 75/50/25 % (Nf 3/2/1), LUnet Nf=8 and Nf=4, and on Unet Nf=4 the pruning runs
STAMP (ranked at the conv output and after the activation), random@STAMP-block and random@widest,
plus STAMP's pruned widths retrained from scratch. Every run trains with one recipe: ``--recipe lean``
(nnunet_lean.recipe: Adam, lr 1e-2, poly) or ``nnunet`` (nnU-Net's SGD: the *BudgetSGD trainers).
Every variant is trained on folds 0..2 (three replicates: other training split, other pruning seed)
with the same budget, then predicts the held-out test cases. Every step is skipped when its result
exists, so an interrupted study resumes where it stopped. Writes results.json, results.md, pareto.png.
--ledger: the finished runs' results also go to a file meant to be committed (docs/ledgers/paper_study.json
holds ours), so the study goes on, and its summary keeps every figure, where its folders are gone.
--precision bf16: training steps under bf16 autocast on a CPU, as the convergence study trains (validation,
predictions and checkpoints stay fp32); its own default folder (repro_bf16), since a study never changes
precision midway.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import textwrap
from pathlib import Path
from typing import Optional

from nnunet_lean.errors import RunError, exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.study import Study, training_steps_text
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
DATASET = 980
NAME = "Dataset980_LeanHippocampus"

# variant: (plans, trainer); "{budget}" trainers live in scripts/bench_trainers
VARIANTS = {
    "Unet Nf=4 (100 %)": ("UnetNf4", "nnUNetTrainerBudget"),
    "Unet 75 % (linear)": ("UnetNf4_Scaled75", "nnUNetTrainerBudget"),
    "Unet 50 % (linear)": ("UnetNf4_Scaled50", "nnUNetTrainerBudget"),
    "Unet 25 % (linear)": ("UnetNf4_Scaled25", "nnUNetTrainerBudget"),
    "LUnet Nf=8": ("LUnetNf8", "nnUNetTrainerBudget"),
    "LUnet Nf=4": ("LUnetNf4", "nnUNetTrainerBudget"),
    "STAMP": ("UnetNf4", "nnUNetTrainerSTAMPBudget"),
    "STAMP (activation)": ("UnetNf4", "nnUNetTrainerSTAMPActivationBudget"),
    "random @ STAMP block": ("UnetNf4", "nnUNetTrainerPruneRandomInSTAMPBlockBudget"),
    "random @ widest": ("UnetNf4", "nnUNetTrainerPruneRandomWidestBudget"),
}
RECIPES = {"lean": "", "nnunet": "SGD"}   # recipe: suffix of the trainers' names
DERIVED_PLANS = [("UnetNf4", "nnUNetPlans", ["--base", "4"]), ("LUnetNf8", "nnUNetPlans", ["--nf", "8"]),
                 ("LUnetNf4", "nnUNetPlans", ["--nf", "4"])] + \
                [(f"UnetNf4_Scaled{p}", "UnetNf4", ["--scale", str(p / 100)]) for p in (75, 50, 25)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="default ~/.cache/nnunet-lean/repro (repro_sgd with --recipe nnunet; _bf16 appended with bf16)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--num-train", type=int, default=40)
    ap.add_argument("--num-test", type=int, default=10)
    ap.add_argument("--recipe", choices=RECIPES, default="lean",
                    help="lean: nnunet_lean.recipe (Adam 1e-2, poly); nnunet: nnU-Net's SGD (*BudgetSGD trainers)")
    ap.add_argument("--summary-only", action="store_true",
                    help="write results.md/json and pareto.png from the runs finished so far; train nothing")
    ap.add_argument("--variants", nargs="+", choices=variant_labels(), default=None, metavar="VARIANT",
                    help="train only these variants (quoted labels as in results.md: 'STAMP (activation)' ...), fold by "
                         "fold; results.md then holds only them until a full run rewrites it")
    ap.add_argument("--prepare-only", action="store_true",
                    help="make the data, plans and preprocessed folders (scripts/pruning_probe.py trains there); train nothing")
    ap.add_argument("--ledger", default=None, metavar="JSON",
                    help="record every finished run's result in this file (nnunet_lean.ledger; commit it): a run "
                         "recorded there is not trained again, and its figures stay in the summary where its folders are gone")
    ap.add_argument("--device", default="cpu", help="nnU-Net's -device for training and prediction (cpu, cuda)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="training steps on a CPU (on a GPU nnU-Net's fp16 autocast applies either way)")
    args = ap.parse_args()
    args.workdir, budget = study_settings(args)
    study = Study(args.workdir, str(BIN), str(TRAINERS), budget, create=not args.summary_only, device=args.device,
                  ledger=args.ledger)
    if args.summary_only:
        runs = recorded_runs(study, args.folds, args.recipe)
        if not runs:
            sys.exit(f"no finished run in {args.workdir} yet")
        summarise(runs, study.work, args)
        return 0

    study.prepare(DATASET, NAME, ["-n", str(args.num_train), "--num-test", str(args.num_test),
                                  "--size", str(args.size)])
    pre = study.folders(NAME)[1]
    for target, source, how in DERIVED_PLANS:
        if not (pre / f"{target}.json").exists():
            study.step(f"plans_{target}", ["nnunet_lean", "modify-plans", "-d", str(DATASET), "-p", source,
                                           "-o", target, "-c", "3d_fullres", *how])
    if args.prepare_only:
        return 0
    for fold in args.folds:
        for label, plans, trainer in training_order(fold, args.recipe):
            if args.variants and label not in args.variants:
                continue
            if plans == scratch_plans(fold) and not (pre / f"{plans}.json").exists() \
                    and not study.result(NAME, plans, trainer, fold):
                stamp_plans, stamp_trainer = VARIANTS["STAMP"]   # the conv point's run of this fold
                stamp = study.result(NAME, stamp_plans, stamp_trainer + RECIPES[args.recipe], fold)
                if not stamp:
                    raise RunError(f"fold {fold}: STAMP's widths need STAMP's run of the fold: add --variants STAMP")
                if not (stamp.get("fold_dir") and Path(stamp["fold_dir"]).is_dir()):
                    raise RunError(f"fold {fold}: STAMP's run is only in the ledger (its folder is gone) and its widths "
                                   f"need the folder: remove its record from {args.ledger} to train it again")
                study.step(f"plans_{plans}", ["nnunet_lean", "pruned-plans", "-d", str(DATASET),
                                              stamp["fold_dir"], "-o", plans])
            study.train_and_test(DATASET, NAME, plans, trainer, fold)
            summarise(recorded_runs(study, args.folds, args.recipe), study.work, args)
    return 0


def study_settings(args) -> tuple:
    """(workdir, budget): fp32 studies keep the budget (and folder) they always had; bf16 adds it to both.
    The SGD recipe has its own default folder, so either recipe's study runs as documented beside the other."""
    budget = {k: getattr(args, k) for k in ("epochs", "iters", "size", "num_train", "num_test", "recipe")}
    if args.precision == "bf16":
        budget["precision"] = "bf16"
    default = ("~/.cache/nnunet-lean/repro" + ("_sgd" if args.recipe == "nnunet" else "")
               + ("_bf16" if args.precision == "bf16" else ""))
    return os.path.expanduser(args.workdir or default), budget


def scratch_plans(fold: int) -> str:
    return f"UnetNf4_STAMPf{fold}"


def variant_labels() -> list:
    return [label for label, _, _ in runs_of_fold(0, "lean")]


def runs_of_fold(fold: int, recipe: str) -> list:
    """(variant, plans, trainer) of every run of one fold, in the tables' order; the last one retrains
    STAMP's pruned widths of this fold from scratch."""
    suffix = RECIPES[recipe]
    return [(label, plans, trainer + suffix) for label, (plans, trainer) in VARIANTS.items()] + \
        [("STAMP widths, retrained from scratch", scratch_plans(fold), "nnUNetTrainerBudget" + suffix)]


def training_order(fold: int, recipe: str) -> list:
    """runs_of_fold with STAMP's run and the retraining of its widths first: the retraining needs STAMP's fold
    folder, which a lost cache takes while the ledger keeps only its figures, so the two run back to back."""
    runs = runs_of_fold(fold, recipe)
    first = [r for r in runs if r[0] == "STAMP" or r[1] == scratch_plans(fold)]
    return first + [r for r in runs if r not in first]


def recorded_runs(study: Study, folds: list, recipe: str) -> list:
    """Every finished run of these folds (its folder or its ledger record), in the study's order."""
    return [dict(variant=label, **r) for fold in folds for label, plans, trainer in runs_of_fold(fold, recipe)
            if (r := study.result(NAME, plans, trainer, fold))]


def summarise(runs: list, work: Path, args) -> None:
    by = by_variant(runs)
    rows = []
    for variant, rs in by.items():
        dice = [r["dice"] for r in rs]
        rows.append({"variant": variant, "runs": len(rs),
                     "parameters (median)": f"{int(statistics.median(r['parameters'] for r in rs)):,}",
                     "test Dice median": f"{statistics.median(dice):.3f}",
                     "min": f"{min(dice):.3f}", "max": f"{max(dice):.3f}",
                     "test Dice per run": " / ".join(f"{d:.3f}" for d in dice),
                     "training Dice, median": _median_of(r.get("training_dice") for r in rs),
                     "validation Dice at 1/2 resolution, median": _median_half_resolution(rs),
                     "lowest validation Dice, full / 1/2 / ... (outputs with loss weight)": _lowest_weighted(rs),
                     "first epoch with foreground, per run": " / ".join(
                         NOT_RECORDED if "first_learning_epoch" not in r else
                         "never" if r["first_learning_epoch"] is None else str(r["first_learning_epoch"])
                         for r in rs)})
    folds = sorted({r["fold"] for r in runs})
    header = (f"{args.num_train} training / {args.num_test} test cases at {args.size}^3, "
              f"budget {args.epochs} epochs x {args.iters} iterations per run, {len(runs)} runs on folds {folds}, "
              f"recipe {RECIPE_TEXT[args.recipe]} for every run, {training_steps_text(args.precision, args.device)}")
    table = markdown_table(rows) + "\n\n" + goals(runs)
    per_run = ("Every run; validation Dice of each deep-supervision output, full resolution first "
               "(`nnunet_lean deep-supervision-dice`):\n\n" + markdown_table(per_run_rows(by)))
    write_text_atomically(header + "\n\n" + table + "\n\n" + per_run + "\n", str(work / "results.md"))
    write_json_atomically({"budget": vars(args), "runs": runs}, str(work / "results.json"), indent=1)
    pareto(by, work / "pareto.png", header)
    print(header + "\n\n" + table, flush=True)


RECIPE_TEXT = {"lean": "lean (Adam, lr 1e-2, poly; nnunet_lean.recipe)",
               "nnunet": "nnU-Net's (SGD, lr 1e-2, Nesterov 0.99, poly)"}
NOT_RECORDED = "n/r"   # a figure a ledger record transcribed from the docs lacks (its folders were lost)
STUCK = 0.05  # the learning issue's bar: below this Dice an output has not learned
OUTPUTS = ["full", "1/2", "1/4", "1/8", "1/16"]   # deep-supervision outputs, full resolution first


def goals(runs: list) -> str:
    """The learning issue's two goals, counted: runs whose full-resolution test Dice is below 0.05, and
    per deep-supervision output that carries loss weight (all but the coarsest), runs whose validation
    Dice is below 0.05."""
    stuck = [f"{r['variant']} f{r['fold']}" for r in runs if r["dice"] < STUCK]
    per_output = [r["validation_dice_per_output"][:-1] for r in runs if r.get("validation_dice_per_output")]
    counts = " / ".join(f"{OUTPUTS[i]} {sum(1 for o in per_output if len(o) > i and o[i] is not None and o[i] < STUCK)}"
                        for i in range(max((len(o) for o in per_output), default=0)))
    return (f"Runs with full-resolution test Dice < {STUCK}: {len(stuck)} of {len(runs)}"
            + (f" ({', '.join(stuck)})" if stuck else "")
            + f". Outputs with loss weight and validation Dice < {STUCK} (of {len(per_output)} runs): {counts or '-'}.")


def by_variant(runs: list) -> dict:
    """Runs grouped by variant (in order of first appearance), each group in fold order."""
    by: dict = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    return {v: sorted(rs, key=lambda r: r["fold"]) for v, rs in by.items()}


def per_run_rows(by: dict) -> list:
    """One row a run of ``by_variant``: what its outputs at each resolution learned."""
    return [{"variant": r["variant"], "fold": r["fold"], "parameters": f"{r['parameters']:,}",
             "test Dice": f"{r['dice']:.3f}",
             "units' widths after pruning, min-max": pruned_widths(history[1]) if history else NOT_RECORDED,
             "picks from a widest unit (uniform)": widest_picks(*history) if history else NOT_RECORDED,
             "head refits kept, full / 1/2 / ...; worst cut -> refit": head_refits(history[1]) if history else NOT_RECORDED,
             "validation Dice full / 1/2 / 1/4 / ...": " / ".join(
                 NOT_RECORDED if d is None else f"{d:.3f}" for d in r.get("validation_dice_per_output") or []) or "-"}
            for rs in by.values() for r in rs for history in [pruning_steps(r)]]


def pruning_steps(run: dict) -> Optional[tuple]:
    """(initial widths, steps) of a pruning run's history (``Study.result`` records it; None: the run did not
    prune, so ({}, [])); None where a ledger record transcribed from the docs lacks the history."""
    if run.get("transcribed") and "pruning_history" not in run:
        return None
    history = run.get("pruning_history") or {}
    return history.get("initial_widths", {}), history.get("steps", [])


def pruned_widths(steps: list) -> str:
    """The narrowest and widest unit a pruning run ended with (the paper's point: pruning flattens the
    doubling U-Net), from its history's steps; "-" for runs that did not prune."""
    if not steps:
        return "-"
    widths = steps[-1]["widths"].values()
    return f"{min(widths)}-{max(widths)}"


def widest_picks(initial_widths: dict, steps: list) -> str:
    """The share of a pruning run's removed channels that came from a unit as wide as the widest at that
    moment, and in brackets the share a channel drawn uniformly from all channels would have had along the
    same path (the paper: STAMP prunes mainly from the widest layers)."""
    widths, picks, uniform = dict(initial_widths), 0, 0.0
    unit_picks = [unit for step in steps for unit, _ in step["picks"]]
    for unit in unit_picks:
        top = max(widths.values())
        picks += widths[unit] == top
        uniform += sum(w for w in widths.values() if w == top) / sum(widths.values())
        widths[unit] -= 1
    return f"{picks / len(unit_picks):.2f} ({uniform / len(unit_picks):.2f})" if unit_picks else "-"


def head_refits(steps: list) -> str:
    """Per segmentation head that carries loss weight (all but the coarsest; full resolution first): in how many
    of a pruning run's steps its refit replaced it (``prune_refit_heads``), then the lowest Dice a head read
    on a step's batches right after a cut, and its refit's Dice there; "-" where no step refitted."""
    steps = [s for s in steps if s.get("head_refits")]
    if not steps:
        return "-"
    # one head per decoder stage (under "cut" a step lists only the heads it tried); decoder.seg_layers.0 is
    # the coarsest
    n = len({u.split(".")[0] for u in steps[-1]["widths"] if u.startswith("dec")})
    heads = [f"decoder.seg_layers.{i}" for i in range(n - 1, 0, -1)]
    kept = " / ".join(str(sum(bool(s["head_refits"].get(h, {}).get("refit")) for s in steps)) for h in heads)
    cuts = [(r["dice_cut"], OUTPUTS[i], s["step"], r["dice_refit"]) for s in steps for i, h in enumerate(heads)
            for r in [s["head_refits"].get(h)] if r and r.get("dice_cut") is not None]
    if not cuts:
        return f"{kept} of {len(steps)}"
    cut, name, step, refit = min(cuts, key=lambda c: c[0])
    refit_text = "-" if refit is None else f"{refit:.3f}"
    return f"{kept} of {len(steps)}; {cut:.3f} -> {refit_text} ({name}, step {step})"


def _median_of(values) -> str:
    """Median of the recorded values ("n/r" where no run recorded one), saying on how many runs it rests when
    some runs lack the value (transcribed records)."""
    values = list(values)
    recorded = [v for v in values if v is not None]
    if not recorded:
        return NOT_RECORDED
    median = f"{statistics.median(recorded):.3f}"
    return median if len(recorded) == len(values) else f"{median} ({len(recorded)} of {len(values)} runs)"


def _lowest_weighted(runs: list) -> str:
    """Per deep-supervision output that carries loss weight (all but the coarsest), the lowest validation Dice
    over the runs: the learning issue's second goal, per variant."""
    outputs = [r["validation_dice_per_output"][:-1] for r in runs if r.get("validation_dice_per_output")]
    lowest = []
    for i in range(max((len(o) for o in outputs), default=0)):
        values = [o[i] for o in outputs if len(o) > i and o[i] is not None]
        lowest.append(f"{min(values):.3f}" if values else NOT_RECORDED)
    return " / ".join(lowest) or "-"


def _median_half_resolution(runs: list) -> str:
    """The second deep-supervision output's validation Dice: what a network learned even where its
    full-resolution output stayed background."""
    half = [r["validation_dice_per_output"][1] for r in runs if len(r.get("validation_dice_per_output") or []) > 1
            and r["validation_dice_per_output"][1] is not None]
    return f"{statistics.median(half):.3f}" if half else "-"


MARKERS = "osD^v<>pPX*h"  # one marker per variant: eleven variants outrun a ten-colour cycle


def pareto(by: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig, ax = plt.subplots(figsize=(7, 4.8))
        colours = plt.get_cmap("tab20").colors
        for i, (variant, rs) in enumerate(by.items()):
            p = statistics.median(r["parameters"] for r in rs)
            dice = [r["dice"] for r in rs]
            med = statistics.median(dice)
            ax.errorbar([p], [med], yerr=[[med - min(dice)], [max(dice) - med]], fmt=MARKERS[i % len(MARKERS)],
                        color=colours[(2 * i) % 20 + (2 * i) // 20], capsize=3, label=variant)
        ax.set(xscale="log", xlabel="parameters", ylabel="test Dice (median, min-max)",
               title=textwrap.fill(title, 120))
        ax.title.set_fontsize(7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = path.with_name(".tmp_" + path.name)
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "reproduce_lunet.py"))
