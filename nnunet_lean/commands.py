"""Run stock nnU-Net commands from studies and scripts: their environment on CPU, each command's wall
time and peak resident memory, and a step runner that logs every command and raises on failure."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

from nnunet_lean.errors import CommandError


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
    """A runner for a script of nnU-Net commands: logs each to LOGS/NAME.log; a failure raises
    CommandError with the log's tail."""
    os.makedirs(logs, exist_ok=True)

    def step(name: str, cmd: Sequence[str], step_env: Optional[Mapping[str, str]] = None) -> Measured:
        print(f"[{os.path.basename(sys.argv[0])}] {name}: {' '.join(cmd)}", flush=True)
        log = os.path.join(logs, f"{name}.log")
        m = run_measured(cmd, env=step_env or env, log_path=log)
        if m.returncode != 0:
            raise CommandError(f"{name} failed (exit {m.returncode}); see {log}\n" + m.output[-3000:])
        return m
    return step
