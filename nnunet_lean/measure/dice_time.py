"""Validation pseudo-Dice against training time, from the log nnU-Net keeps in each fold's checkpoint.

Time is the running sum of logged epoch durations (end - start), so pauses between a kill and ``--c``
do not count; a pruning step counts (it runs inside its epoch). Dice is nnU-Net's EMA of the per-epoch
pseudo-Dice, the value it picks checkpoint_best by. Times of runs from separate processes compare only
when the runs ran one after another on an otherwise idle machine.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from nnunet_lean.errors import RunError
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.runs import TrainedFold
from nnunet_lean.tables import markdown_table

REACH = 0.99   # "reached": this fraction of the reference run's final Dice


def curve(fold: TrainedFold, log: Optional[dict] = None) -> dict:
    """Cumulative training hours and EMA pseudo-Dice after each logged epoch of one fold; from ``log`` where the
    caller has already loaded the fold's checkpoint (its "logging"), else from ``fold.training_log()``."""
    log = log or fold.training_log()
    n = min(len(log["epoch_start_timestamps"]), len(log["epoch_end_timestamps"]), len(log["ema_fg_dice"]))
    seconds = np.cumsum([log["epoch_end_timestamps"][i] - log["epoch_start_timestamps"][i] for i in range(n)])
    return {"label": f"{fold.trainer} / {fold.plans} / fold {fold.fold}", "fold_dir": str(fold.path),
            "hours": [float(s) / 3600 for s in seconds], "dice": [float(d) for d in log["ema_fg_dice"][:n]]}


def time_to_reach(c: dict, target: float) -> Optional[float]:
    """Hours until the EMA first reaches ``target``; None if it never does."""
    return next((h for h, d in zip(c["hours"], c["dice"]) if d >= target), None)


def epochs_to_reach(c: dict, target: float) -> Optional[int]:
    """Epochs (1-based count) until the EMA first reaches ``target``; None if it never does. Times the
    epoch cost ratio measured on one machine (scripts/epoch_cost.py), this ratio gives the time ratio without
    comparing clocks of separate processes."""
    return next((i + 1 for i, d in enumerate(c["dice"]) if d >= target), None)


def dice_at(c: dict, hours: float) -> Optional[float]:
    """The EMA of the last epoch that ended by ``hours``; None if none had."""
    done = [d for h, d in zip(c["hours"], c["dice"]) if h <= hours + 1e-12]
    return done[-1] if done else None


def compare(fold_dirs: Sequence[str], reference: Optional[str] = None) -> dict:
    """Curves of ``fold_dirs`` and the table: final Dice, time and epochs to 99 % of the reference's final Dice,
    Dice when the fastest run finished. Every folder is read before anything is computed."""
    if not fold_dirs:
        raise RunError("give at least one fold folder")
    curves = [curve(TrainedFold.open(d)) for d in fold_dirs]
    return compare_curves(curves, curve(TrainedFold.open(reference)) if reference else None)


def compare_curves(curves: Sequence[dict], reference: Optional[dict] = None) -> dict:
    """``compare`` of curves already read (``curve``; a study's ledger keeps them where the folders are gone)."""
    curves = list(curves)
    ref = reference or curves[0]
    for c in curves + [ref]:
        if not c["hours"]:
            raise RunError(f"{c['fold_dir']} has not logged a finished epoch yet")
    target = REACH * ref["dice"][-1]
    ref_time, ref_epochs = time_to_reach(ref, target), epochs_to_reach(ref, target)
    fastest = min(c["hours"][-1] for c in curves)
    rows = []
    for c in curves:
        reached, epochs = time_to_reach(c, target), epochs_to_reach(c, target)
        rows.append({"run": c["label"], "fold_dir": c["fold_dir"], "epochs": len(c["hours"]),
                     "hours": c["hours"][-1], "final_dice": c["dice"][-1], "hours_to_target": reached,
                     "time_ratio_to_reference": None if reached is None or not ref_time else reached / ref_time,
                     "epochs_to_target": epochs,
                     "epoch_ratio_to_reference": None if epochs is None or not ref_epochs else epochs / ref_epochs,
                     "dice_when_fastest_finished": dice_at(c, fastest)})
    return {"reference": ref["fold_dir"], "target_dice": target, "reach": REACH, "fastest_finish_hours": fastest,
            "runs": rows, "curves": curves}


def markdown(result: dict) -> str:
    f3 = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [{"run": r["run"], "epochs": r["epochs"], "training time": _hm(r["hours"]),
             "final Dice (EMA)": f3(r["final_dice"]),
             f"time to {REACH:.0%} of the reference's": "not reached" if r["hours_to_target"] is None
             else _hm(r["hours_to_target"]),
             "ratio to the reference's": f3(r["time_ratio_to_reference"]),
             "epochs to it (ratio)": "-" if r["epochs_to_target"] is None
             else f"{r['epochs_to_target']} ({f3(r['epoch_ratio_to_reference'])})",
             f"Dice at {_hm(result['fastest_finish_hours'])} (fastest run's end)": f3(r["dice_when_fastest_finished"])}
            for r in result["runs"]]
    return (f"Reference: {result['reference']} (target: {REACH:.0%} of its final EMA pseudo-Dice = "
            f"{result['target_dice']:.3f}). Time = sum of logged epoch durations.\n\n" + markdown_table(rows))


def _hm(hours: float) -> str:
    minutes = round(hours * 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{hours * 60:.1f} min"


def plot(result: dict, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for c in result["curves"]:
            ax.plot(c["hours"], c["dice"], label=c["label"], lw=1.5)
        ax.axhline(result["target_dice"], color="grey", ls=":", lw=1,
                   label=f"{REACH:.0%} of the reference's final Dice")
        ax.set(xlabel="training time, h (sum of logged epoch durations)", ylabel="validation pseudo-Dice (EMA)",
               ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        tmp = os.path.join(os.path.dirname(os.path.abspath(png)), ".tmp_" + os.path.basename(png))
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, png)


def write(result: dict, png: str) -> List[str]:
    """OUT.png, OUT.md and OUT.json (the curves included); returns the paths."""
    if not png.endswith(".png"):
        raise RunError(f"-o {png}: give a .png path (the .md and .json tables go beside it)")
    stem = png[:-len(".png")]
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    plot(result, png)
    write_text_atomically(markdown(result) + "\n", stem + ".md")
    write_json_atomically(result, stem + ".json", indent=1)
    return [png, stem + ".md", stem + ".json"]
