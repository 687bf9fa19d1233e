"""Measure finished nnU-Net runs: wall time and peak memory of a command, epoch times,
parameters of a checkpoint, Dice of an evaluated folder; render a markdown table."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

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


def median_epoch_seconds(checkpoint: dict) -> float:
    log = checkpoint["logging"]
    durations = [e - s for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]
    return statistics.median(durations)


def foreground_dice(summary_json: str) -> float:
    with open(summary_json) as f:
        return json.load(f)["foreground_mean"]["Dice"]


def markdown_table(rows: List[Dict[str, object]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
