"""Run stock nnU-Net commands from studies and scripts: their environment on CPU, each command's wall
time and peak resident memory, and a step runner that logs every command and raises on failure."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from nnunet_lean.errors import CommandError


@dataclass
class Measured:
    returncode: int
    seconds: float
    peak_rss_mb: float
    output: str
    peak_tree_rss_mb: Optional[float] = None   # PSS summed over the process tree (tree=True)


def _descendants(pid: int) -> List[int]:
    """pid and every live descendant, from /proc (Linux)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_mb(pid: int) -> float:
    """Memory of a process and all its descendants: the sum of their proportional set sizes (PSS: a page
    shared by n processes counts 1/n in each, so shared libraries count once), from /proc/PID/smaps_rollup."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return total / 1024


def run_measured(args: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, log_path: Optional[str] = None, tree: bool = False) -> Measured:
    """Run a command; report its wall time and peak resident memory (its own rusage via wait4); with
    ``tree``, also the peak of its process tree's summed memory (PSS, see :func:`tree_rss_mb`), sampled
    every 50 ms (nnU-Net preprocesses and exports in child processes)."""
    start = time.perf_counter()
    peak, done = [0.0], threading.Event()
    with open(log_path or os.devnull, "w") as log:
        proc = subprocess.Popen(list(args), env=dict(env) if env is not None else None, cwd=cwd,
                                stdout=log, stderr=subprocess.STDOUT)
        if tree:
            def sample() -> None:
                while not done.wait(0.05):
                    peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        if tree:
            sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = open(log_path).read() if log_path else ""
    # ru_maxrss is in kilobytes on Linux
    return Measured(proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024, output,
                    peak[0] if tree else None)


PASS_THROUGH = ("nnUNet_compile",)  # how to run, not where the data is


def nnunet_environment(workdir: str, bin_dir: str, training: bool = False, device: str = "cpu") -> Dict[str, str]:
    """Environment for stock nnU-Net commands with their folders under ``workdir``. The user's nnU-Net
    variables are dropped (a study must not read or write their folders), except the run-time choice in
    ``PASS_THROUGH``. Training on a CPU runs data augmentation in the main process; on a GPU nnU-Net's own
    worker count applies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_") or k in PASS_THROUGH}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", nnUNet_raw=os.path.join(workdir, "raw"),
               nnUNet_preprocessed=os.path.join(workdir, "preprocessed"),
               nnUNet_results=os.path.join(workdir, "results"), nnUNet_def_n_proc="1", MPLBACKEND="Agg")
    if training and device == "cpu":
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
