"""Test Dice of a convergence study's runs on many more held-out cases than the study's 10.

    python scripts/heldout_dice.py --dataset airway [--num-new 100] [--pairs 4,5 1,2 2,3]
                                   [--workdir ~/.cache/nnunet-lean/converge] [--precision bf16]
                                   [--ledger docs/ledgers/heldout_DATASET.json]

Ten test cases leave a per-label Dice gap of a point or two within sampling noise. This makes the study's
dataset again with 10 + N test cases (`nnunet_lean make-dataset`, the same seed: the study's 10 test cases and
N new ones) in ROOT/heldout/raw (ROOT = WORKDIR/DATASET_PRECISION, converge.py's folder), then for every
finished run of every budget (ROOT/E<epochs>) predicts them as the study does (stock nnUNetv2_predict, no
mirroring) and evaluates them (nnUNetv2_evaluate_folder) into ROOT/heldout/predictions/E<epochs>/<run>. Writes
ROOT/heldout/results.md / .json: per run the test Dice per label, its gap to the default of the same budget
with twice the standard error of the per-case paired differences, and the voxels swapped between label pairs
(scripts/label_confusion.py). Every step is skipped when its output exists (resumable); run it with the study
paused (NNUNET_LEAN_PAUSE_FILE) or finished, since it shares the CPU. --ledger records each run's row (per-case
Dice, swapped voxels) in a committed file as it is made: a run recorded there keeps its row where its folders are
gone (a wiped cache), so a run is predicted once, while its model exists.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from converge import BIN, DATASETS, NETWORKS, TRAINERS, gap
from label_confusion import confusion, flipped, parse_pairs, swapped
from nnunet_lean import commands, runs
from nnunet_lean.errors import LeanError, exit_on_error
from nnunet_lean.ledger import Ledger, run_key
from nnunet_lean.study import Study
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.tables import markdown_table

DEFAULT_PAIRS = {"airway": ["4,5", "1,2", "2,3"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="airway")
    ap.add_argument("--num-new", type=int, default=100, help="new test cases besides the study's 10")
    ap.add_argument("--pairs", nargs="*", default=None,
                    help="label pairs whose swapped voxels to count (default for airway: 4,5 1,2 2,3, left/right "
                         "bronchus, trachea/extension, extension/carina; none otherwise)")
    ap.add_argument("--workdir", default="~/.cache/nnunet-lean/converge")
    ap.add_argument("--precision", default="bf16", help="the study's folder suffix (bf16, fp32, cuda)")
    ap.add_argument("--ledger", default=None, metavar="JSON",
                    help="record each run's row here (commit it); a run recorded there is not predicted again and "
                         "keeps its row where its folders are gone")
    args = ap.parse_args()
    d, name, make = DATASETS[args.dataset]
    root = Path(args.workdir).expanduser() / f"{args.dataset}_{args.precision}"
    levels = sorted((p for p in root.glob("E*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    if not levels:
        raise LeanError(f"no study budgets (E<epochs> folders) in {root}: run scripts/converge.py first")
    if not (levels[0] / "budget.json").is_file() or not (levels[0] / "raw" / name / "dataset.json").is_file():
        raise LeanError(f"{levels[0]} holds no prepared study: run scripts/converge.py --dataset {args.dataset} first")
    budget = json.loads((levels[0] / "budget.json").read_text())
    labels = set(json.loads((levels[0] / "raw" / name / "dataset.json").read_text())["labels"].values())
    pairs = parse_pairs(DEFAULT_PAIRS.get(args.dataset, []) if args.pairs is None else args.pairs)
    if any(a not in labels or b not in labels for a, b in pairs):
        raise LeanError(f"--pairs must name labels of {name} ({sorted(labels)})")
    out = root / "heldout"
    raw = out / "raw" / name
    if (raw / "labelsTs").is_dir():
        made = len(list((raw / "labelsTs").iterdir())) - budget["num_test"]
        if made != args.num_new:
            raise LeanError(f"{out} was made with --num-new {made}: pass that, or delete {out} to make it anew")
    ledger = args.ledger and Ledger(args.ledger, {
        **{k: budget.get(k) for k in ("dataset", "precision", "num_train", "num_test", "iters")},
        "num_new": args.num_new, "pairs": [f"{a},{b}" for a, b in pairs]})
    recorded = {}   # (level name, network key) -> row, from the ledger
    for level_name in dict.fromkeys([p.name for p in levels] + [k.split("/")[0] for k in (ledger.runs if ledger else {})]):
        for key, (_, plans, trainer, _) in NETWORKS.items():
            row = ledger and ledger.get(f"{level_name}/{run_key(name, plans, trainer, 0)}")
            if row:
                recorded[level_name, key] = row
    finished = [(level, key, label, plans, trainer) for level in levels
                for key, (label, plans, trainer, _) in NETWORKS.items()
                if (level.name, key) not in recorded and
                (runs.fold_folder(level / "results" / name, trainer, plans, "3d_fullres", 0)
                 / "checkpoint_final.pth").exists()]
    if not finished and not recorded:
        raise LeanError(f"no finished run in {root}: let scripts/converge.py --dataset {args.dataset} train one first")
    step = commands.run_steps(str(out / "logs"), {})
    if finished and not (raw / "dataset.json").exists():   # -n as the study's, so that case i is the same case in both
        env = commands.nnunet_environment(str(out), str(BIN))
        step(f"dataset_{d}", ["nnunet_lean", "make-dataset", "-d", str(d), "-n", str(budget["num_train"]),
                              "--num-test", str(budget["num_test"] + args.num_new), *make], env)
    studies = {level: Study(str(level), str(BIN), str(TRAINERS), json.loads((level / "budget.json").read_text()),
                            create=False) for level in dict.fromkeys(level for level, *_ in finished)}
    table = dict(recorded)
    for level, key, label, plans, trainer in finished:
        pred = out / "predictions" / level.name / f"{trainer}_{plans}_f0"
        studies[level].test(d, name, plans, trainer, 0, raw, pred, prefix="heldout_")
        total, per_case = confusion(raw / "labelsTs", pred)
        table[level.name, key] = row = {
            "level": level.name, "key": key, "network": label, "steps": int(level.name[1:]) * budget["iters"],
            "per_case": runs.summary_dice_per_case(pred / "summary.json"),
            "dice": runs.summary_dice(pred / "summary.json")[0],
            "swapped": {f"{a},{b}": swapped(total, a, b) for a, b in pairs},
            "cases_flipped": {f"{a},{b}": sum(flipped(m, a, b) for m in per_case.values()) for a, b in pairs}}
        if ledger:
            ledger.record(f"{level.name}/{run_key(name, plans, trainer, 0)}", row)
    # budgets in order, networks in NETWORKS' order
    rows = [table[k] for k in sorted(table, key=lambda k: (int(k[0][1:]), list(NETWORKS).index(k[1])))]
    summarise(rows, out, budget["num_test"], args)
    return 0


def mean(values: list) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.fmean(known):.3f}" if known else "-"


def reference(r: dict, rows: list) -> dict:
    """The default of r's budget trained as r was (default_nomirror for lean32_nomirror), else the default."""
    same = [x for x in rows if x["level"] == r["level"]]
    suffix = r["key"][r["key"].index("_"):] if "_" in r["key"] else ""
    return next((x for x in same if x["key"] == "default" + suffix and x is not r), None) or \
        next((x for x in same if x["key"] == "default"), None)


def summarise(rows: list, out: Path, study_test: int, args) -> None:
    table = []
    for r in rows:
        ref = reference(r, rows)
        labels = sorted(r["per_case"], key=int)
        table.append({"steps": r["steps"], "network": r["network"], "test Dice": f"{r['dice']:.3f}",
                      "per label": ", ".join(mean(r["per_case"][lab]) for lab in labels),
                      "per label - its default (points, +- 2 SE)": "-" if ref is None or ref is r else
                      f"vs {ref['key']}: " + "; ".join(gap(r["per_case"][lab], ref["per_case"][lab]) for lab in labels),
                      **{f"voxels swapped {p} (cases flipped)": f"{v:,} ({r['cases_flipped'][p]})"
                         for p, v in r["swapped"].items()}})
    header = (f"{args.dataset}: the convergence study's runs on {study_test + args.num_new} held-out test cases (its {study_test} and "
              f"{args.num_new} new ones, same generator and seed), predicted without mirroring; gaps: mean of the "
              f"per-case paired differences to the default of the same budget trained the same way (default_nomirror "
              f"for *_nomirror rows), +- twice their standard error (whole-case flips make them heavy-tailed: a rough "
              f"interval); a case is flipped when more than half "
              f"of a pair's reference voxels got the other label (`python scripts/heldout_dice.py "
              f"--dataset {args.dataset} --num-new {args.num_new}`)")
    text = header + "\n\n" + markdown_table(table) + "\n"
    write_text_atomically(text, str(out / "results.md"))
    write_json_atomically({"args": vars(args), "runs": rows}, str(out / "results.json"), indent=1)
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "heldout_dice.py"))
