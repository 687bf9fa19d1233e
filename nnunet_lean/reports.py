"""Measure finished nnU-Net runs: wall time and peak memory of a command, epoch times,
parameters of a checkpoint, Dice of an evaluated folder; render a markdown table."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch


@dataclass
class Measured:
    returncode: int
    seconds: float
    peak_rss_mb: float
    output: str


def run_measured(args: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, log_path: Optional[str] = None) -> Measured:
    """Run a command; report its wall time and peak resident memory (its own rusage via wait4)."""
    start = time.perf_counter()
    with open(log_path or os.devnull, "w") as log:
        proc = subprocess.Popen(list(args), env=dict(env) if env is not None else None, cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = open(log_path).read() if log_path else ""
    # ru_maxrss is in kilobytes on Linux
    return Measured(proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024, output)


def nnunet_environment(workdir: str, bin_dir: str, training: bool = False) -> Dict[str, str]:
    """Environment for stock nnU-Net commands on CPU with their folders under ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", nnUNet_raw=os.path.join(workdir, "raw"),
               nnUNet_preprocessed=os.path.join(workdir, "preprocessed"),
               nnUNet_results=os.path.join(workdir, "results"), nnUNet_def_n_proc="1", MPLBACKEND="Agg")
    if training:
        env["nnUNet_n_proc_DA"] = "0"  # breaks plan_and_preprocess: training only
    return env


def run_steps(logs: str, env: Mapping[str, str]):
    """A runner for a script of nnU-Net commands: logs each to LOGS/NAME.log, exits on failure."""
    os.makedirs(logs, exist_ok=True)

    def step(name: str, cmd: Sequence[str], step_env: Optional[Mapping[str, str]] = None) -> Measured:
        print(f"[{os.path.basename(sys.argv[0])}] {name}: {' '.join(cmd)}", flush=True)
        log = os.path.join(logs, f"{name}.log")
        m = run_measured(cmd, env=step_env or env, log_path=log)
        if m.returncode != 0:
            sys.exit(f"{name} failed (exit {m.returncode}); see {log}\n" + m.output[-3000:])
        return m
    return step


def load_checkpoint(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_parameters(checkpoint: dict) -> int:
    """Parameters of the trained network. A state dict names some tensors twice (``conv`` and
    ``all_modules.0``; ``decoder.encoder.*``): count each storage once, and no buffers."""
    seen, total = set(), 0
    for k, w in checkpoint["network_weights"].items():
        if not torch.is_tensor(w) or "running_" in k or "num_batches" in k:
            continue
        if w.data_ptr() not in seen:
            seen.add(w.data_ptr())
            total += w.numel()
    return total


def epoch_seconds(checkpoint: dict) -> List[float]:
    """Duration of every epoch, from nnU-Net's own logging in the checkpoint."""
    log = checkpoint["logging"]
    return [e - s for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]


def median_epoch_seconds(checkpoint: dict) -> float:
    return statistics.median(epoch_seconds(checkpoint))


def first_learning_epoch(checkpoint: dict, threshold: float = 0.05) -> Optional[int]:
    """First epoch whose validation pseudo-Dice (mean over foreground classes) exceeds ``threshold``:
    when the network stopped predicting background everywhere. None: it never did."""
    return next((i for i, d in enumerate(checkpoint["logging"]["mean_fg_dice"]) if d > threshold), None)


def summary_dice(summary_json: str) -> Tuple[float, Dict[str, float]]:
    """Foreground-mean test Dice and the Dice of each label (or region, in its order) of an
    nnUNetv2_evaluate_folder summary.json, read once."""
    with open(summary_json) as f:
        summary = json.load(f)
    return summary["foreground_mean"]["Dice"], {label: m["Dice"] for label, m in summary["mean"].items()}


def foreground_dice(summary_json: str) -> float:
    return summary_dice(summary_json)[0]


def markdown_table(rows: List[Dict[str, object]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
