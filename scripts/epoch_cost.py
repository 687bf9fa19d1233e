"""What an epoch of each network costs, measured side by side: short real trainings in turns on one machine.

    python scripts/epoch_cost.py --study ~/.cache/nnunet-lean/converge/airway_bf16/E80
                                 [--networks default lean32 lean16 lean8] [--rounds 2 --epochs 3 --iters 50]

A study's runs keep their own clocks, but they ran in separate processes, often in separate sessions on
machines of different speed, so the ratio of their times mixes the machine into the network's cost. This
trains each network of `converge.py` (its trainer, plans and the study's precision and data) for
EPOCHS x ITERS steps, in turns (default, lean32, ..., lean32, default, ...; odd rounds reversed), each run
in a scratch results folder, and reports per network the median epoch time (each run's first epoch left out: warm-up), where it
went (batches waited for, steps; nnunet_lean.measure.phases) and its ratio to the first network. Times the
epochs-to-target ratio of `nnunet_lean dice-vs-time`, it gives the training-time ratio on one machine.
Writes STUDY/epoch_cost.md and .json (-o to change the prefix). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

from converge import DATASETS, NETWORKS

from nnunet_lean import commands
from nnunet_lean.errors import RunError, exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.measure.phases import PHASES
from nnunet_lean.runs import TrainedFold, epoch_seconds, fold_folder
from nnunet_lean.study import StudyError, budget_training_environment
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"


def main() -> int:
    """Train every network in turns; write and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True,
                    help="a converge.py level folder (holds budget.json, raw/, preprocessed/)")
    ap.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["default", "lean32", "lean16", "lean8"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="per run; the first is left out as warm-up")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("-o", "--out", help="output prefix (default STUDY/epoch_cost)")
    ap.add_argument("--device", default="cpu", help="nnU-Net's -device (cpu, cuda)")
    args = ap.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        ap.error("--epochs must be 2 or more (the first is warm-up) and --rounds 1 or more")
    study = Path(args.study).expanduser().resolve()
    if not (study / "budget.json").is_file():
        raise StudyError(f"{study} holds no budget.json: give a converge.py level folder (e.g. .../airway_bf16/E80)")
    budget = json.loads((study / "budget.json").read_text())
    dataset_id, name, _ = DATASETS[budget["dataset"]]
    missing = [k for k in args.networks if not (study / "preprocessed" / name / f"{NETWORKS[k][1]}.json").is_file()]
    if missing:
        raise StudyError(f"{study} has no plans for {', '.join(missing)}: run converge.py with those networks first")
    times = {k: [] for k in args.networks}
    phases = {k: [] for k in args.networks}
    with tempfile.TemporaryDirectory(prefix="epoch_cost_") as scratch:
        env = dict(budget_training_environment(str(study), str(BIN), str(TRAINERS),
                                               dict(budget, epochs=args.epochs, iters=args.iters), args.device),
                   nnUNet_results=scratch)
        step = commands.run_steps(str(Path(scratch) / "logs"), env)
        for r in range(args.rounds):
            # a drift within a round then favours no network: odd rounds run in reverse order
            for key in (args.networks if r % 2 == 0 else args.networks[::-1]):
                _, plans, trainer, _ = NETWORKS[key]
                step(f"round{r}_{key}", ["nnUNetv2_train", str(dataset_id), "3d_fullres", "0", "-tr", trainer,
                                         "-p", plans, "-device", args.device])
                fold = TrainedFold.open(fold_folder(Path(scratch) / name, trainer, plans, "3d_fullres", 0))
                t, p = timed_epochs(fold)
                times[key] += t
                phases[key] += p
                shutil.rmtree(fold.model_folder)
    result = summarise(times, phases, args, study, budget)
    out = args.out or str(study / "epoch_cost")
    write_json_atomically(result, out + ".json")
    write_text_atomically(markdown(result), out + ".md")
    print(markdown(result))
    return 0


def timed_epochs(fold: TrainedFold) -> Tuple[List[float], List[dict]]:
    """A run's epoch durations and phases, its first epoch (warm-up: allocator, threads) left out."""
    times, phases = epoch_seconds({"logging": fold.training_log()}), fold.epoch_phases()
    if len(phases) != len(times):
        raise RunError(f"{fold.path}: {len(times)} epochs but {len(phases)} phase lines: not a budget trainer's run")
    return times[1:], phases[1:]


def summarise(times: dict, phases: dict, args: argparse.Namespace, study: Path, budget: dict) -> dict:
    """Per network: epochs timed, median epoch and phases, ratio to the first network; the command line."""
    first = statistics.median(times[args.networks[0]])
    rows = []
    for key, ts in times.items():
        med = statistics.median(ts)
        rows.append({"network": key, "label": NETWORKS[key][0], "epochs": len(ts), "median_epoch_s": med,
                     "ratio": med / first, **{p: statistics.median(r[p] for r in phases[key]) for p in PHASES}})
    return {"study": str(study), "precision": budget.get("precision", "fp32"), "rounds": args.rounds,
            "epochs_per_run": args.epochs, "iters": args.iters,
            "command": "python scripts/epoch_cost.py --study " + str(study) + " --networks " + " ".join(args.networks)
            + f" --rounds {args.rounds} --epochs {args.epochs} --iters {args.iters}", "rows": rows}


def markdown(result: dict) -> str:
    rows = [{"network": r["label"], "epochs timed": r["epochs"], "median epoch": f"{r['median_epoch_s']:.1f} s",
             "ratio to first": f"{r['ratio']:.2f}", **{f"{p} (median s)": f"{r[p]:.1f}" for p in PHASES}}
            for r in result["rows"]]
    return (f"Epoch cost side by side ({result['iters']} training steps per epoch, training steps in "
            f"{result['precision']}, runs in turns, each run's first epoch left out):\n\n"
            + markdown_table(rows) + f"\n\n`{result['command']}`\n")


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "epoch_cost.py"))
