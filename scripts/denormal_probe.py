"""Dead stages and denormals in a trained fold, and what they cost a CPU training step.

    python scripts/denormal_probe.py FOLD_DIR [--checkpoint NAME] [--fp32] [--repeats 5] [-o OUT.json]

Per stage of the checkpoint's network: the largest |weight| and the share of denormal weights (|x| < 1.2e-38)
and of denormal first Adam moments. Then one training step with the checkpoint's weights and optimizer state
(forward + backward of nnU-Net's deep-supervision loss on a random batch of the plan's patch and batch size
with the network's own prediction as targets, i.e. a fitted network's small gradients; bf16 autocast as the
studies train unless --fp32; then the optimizer step), timed with denormals kept and
with them flushed to zero (nnunet_lean.precision.flush_denormals), each in a fresh process: the flag has to
be set before torch's thread pool exists. nnUNet_preprocessed must hold the fold's dataset (its plans); the
studies' budget trainers are found in scripts/bench_trainers unless nnUNet_extTrainer is set.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import torch

from nnunet_lean import runs
from nnunet_lean.errors import exit_on_error
from nnunet_lean.tables import markdown_table

TINY = torch.finfo(torch.float32).tiny
STAGE = r"(encoder\.stages\.\d+|decoder\.stages\.\d+|decoder\.transpconvs\.\d+|decoder\.seg_layers)"


def denormal_count(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < TINY)).sum())


def stages(checkpoint: dict) -> list:
    """One row per encoder/decoder stage: parameters, largest |conv weight|, denormal shares of its
    parameters and of their first Adam moments."""
    weights = runs.unique_parameters(checkpoint["network_weights"])   # in the order of the optimizer's state
    optimizer = checkpoint.get("optimizer_state", {})
    state = optimizer.get("state", {})
    # the state is keyed by the index of the parameter in the optimizer's groups, so positions match only when
    # the groups list exactly our parameters. A parameter that never got a gradient has no state (nnU-Net's
    # coarsest deep-supervision output carries loss weight 0, so its seg layer has none): zero moments.
    indices = [i for g in optimizer.get("param_groups", []) for i in g["params"]]
    aligned = indices == list(range(len(weights)))
    moments = [state[i]["exp_avg"] if i in state else torch.zeros_like(w)
               for i, w in enumerate(weights.values())] if aligned else [None] * len(weights)
    groups = defaultdict(list)
    for (name, w), m in zip(weights.items(), moments):
        g = re.match(STAGE, name)
        groups[g.group(1) if g else "other"].append((name, w, m))
    rows = []
    for group, ws in groups.items():
        n = sum(w.numel() for _, w, _ in ws)
        convs = [w for name, w, _ in ws if w.ndim >= 4]
        rows.append({"stage": group, "parameters": n,
                     "max |conv weight|": max((float(w.abs().max()) for w in convs), default=None),
                     "denormal weights": sum(denormal_count(w) for _, w, _ in ws) / n,
                     "denormal Adam moments": (sum(denormal_count(m) for _, _, m in ws) / n
                                               if all(m is not None for _, _, m in ws) else None)})
    return rows


def step_seconds(fold_dir: str, checkpoint_name: str, fp32: bool, repeats: int) -> float:
    """Median seconds of one training step with the checkpoint's weights and optimizer state (this process's
    denormal mode as it is)."""
    from nnunet_lean.measure import networks, report
    from nnunet_lean.precision import autocast_training_forward

    run = runs.TrainedFold.open(fold_dir)
    ckpt = run.load(checkpoint_name)
    st = report.setting(run.dataset_name, run.configuration, run.plans)
    cls = report.candidates([run.trainer], [], run.plans, run.configuration)[1][1]
    net = st.build(cls, True, ckpt["network_weights"])
    if not fp32:
        autocast_training_forward(net)
    net.train()
    group = ckpt["optimizer_state"]["param_groups"][0]
    opt = (torch.optim.Adam(net.parameters(), lr=group["lr"]) if "betas" in group else
           torch.optim.SGD(net.parameters(), lr=group["lr"], momentum=0.99, nesterov=True))
    opt.load_state_dict(ckpt["optimizer_state"])
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(st.batch, st.in_ch, *st.patch, generator=rng)
    with torch.no_grad():   # targets: the network's own prediction, so the small gradients of a fitted network
        targets = [o.argmax(1, keepdim=True).float() for o in net(x)]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        st.loss(net(x), targets).backward()
        opt.step()

    step()
    return networks.round_robin_seconds([step], repeats, torch.device("cpu"))[0]


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.startswith("max"):
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.1%}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold_dir")
    ap.add_argument("--checkpoint", default=None, help="default: final, else best, else latest")
    ap.add_argument("--fp32", action="store_true", help="time fp32 steps (default: bf16 autocast)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-o", "--output", help="JSON file for the figures")
    ap.add_argument("--time-one", choices=["kept", "flushed"], help=argparse.SUPPRESS)  # the child processes
    args = ap.parse_args()
    run = runs.TrainedFold.open(args.fold_dir)
    name = run.checkpoint_path(args.checkpoint).name
    if args.time_one:
        if args.time_one == "flushed":
            from nnunet_lean.precision import flush_denormals
            if not flush_denormals():
                sys.exit("denormal_probe.py: this CPU cannot flush denormals on every thread")
        print(json.dumps(step_seconds(args.fold_dir, name, args.fp32, args.repeats)))
        return 0
    checkpoint = run.load(name)
    rows = stages(checkpoint)
    times = {}
    bench = str(Path(__file__).resolve().parent / "bench_trainers")   # the studies' budget trainers
    ext = os.pathsep.join(filter(None, [os.environ.get("nnUNet_extTrainer"), bench]))
    env = dict(os.environ, nnUNet_extTrainer=ext)
    for mode in ("kept", "flushed"):
        cmd = [sys.executable, __file__, args.fold_dir, "--checkpoint", name, "--repeats", str(args.repeats),
               "--time-one", mode] + (["--fp32"] if args.fp32 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit((proc.stderr.strip().splitlines() or ["the timing process failed"])[-1])
        times[mode] = json.loads(proc.stdout.splitlines()[-1])
    print(f"{run.path} ({name}, epoch {checkpoint.get('current_epoch')}):\n")
    print(markdown_table([{k: _cell(k, v) for k, v in r.items()} for r in rows]))
    print(f"\ntraining step ({'fp32' if args.fp32 else 'bf16 autocast'}): denormals kept {times['kept']:.3f} s, "
          f"flushed {times['flushed']:.3f} s (ratio {times['flushed'] / times['kept']:.2f})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"fold_dir": str(run.path), "checkpoint": name, "stages": rows, "step_s": times}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "denormal_probe.py"))
