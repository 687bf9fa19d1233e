"""Whole-case CPU prediction time and memory: stock nnUNetv2_predict of the default network against
`nnunet_lean predict` with other networks and backends, timed in turns in one run.

    python scripts/bench_deploy.py --kind mni [--spacing 1] [--rounds 2] [--threads 2]
                                   [--workdir ~/.cache/nnunet-lean/deploy-bench]

Per dataset (one test case; `--kind airway` for the 64^3 airway-like case, `mni` for the MNI152 head at
`--spacing` mm): nnUNetPlans 3d_fullres; folds of the default network, LUnet Nf=32 and Nf=16
(nnUNetTrainerLean, _Nf16) and a STAMP fold pruned to half its channels, with initial weights (a network
runs as fast with any weights: timings only; the agreement and bf16 Dice need trained folds, see
README). Each non-torch candidate predicts from an export made beforehand (`nnunet_lean export`), so the
export's self-check is not timed. Mirroring on (nnU-Net's default) and off. Every candidate runs once per
round, rounds in turn; figures are medians over rounds, ratios to the stock default of the same round.
Time in the network = the adapter's own count of its calls' seconds (NNUNET_LEAN_NETWORK_TIMES); for the
stock run it is estimated from the torch-backend run of the same network without mirroring (its seconds
per call times the stock run's number of calls: 8 per patch with mirroring on 3 axes, 1 without), so the
default network is not predicted twice with mirroring. Memory: peak of the prediction's
process tree's summed PSS (shared pages counted once; nnU-Net preprocesses and exports in child
processes), sampled every 50 ms.
Resumable: finished measurements are kept in results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from nnunet_lean import commands, runs
from nnunet_lean.errors import CommandError, exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.study import Study
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
DATASETS = {"airway": (993, "Dataset993_LeanAirwayDeploy", ["--kind", "airway", "--size", "64",
                                                           "--name", "LeanAirwayDeploy"]),
            "mni": (994, "Dataset994_LeanMNIDeploy", ["--kind", "mni", "--name", "LeanMNIDeploy"])}
FOLDS = {"default": "nnUNetTrainer", "lean32": "nnUNetTrainerLean", "lean16": "nnUNetTrainerLean_Nf16",
         "pruned": "nnUNetTrainerSTAMP"}
# (key, label, fold, backend, precision); "stock" = nnUNetv2_predict
CANDIDATES = [("stock", "nnU-Net default, stock nnUNetv2_predict", "default", "stock", "fp32"),
              ("default_torch", "default, nnunet_lean predict torch (mirroring off only)", "default", "torch", "fp32"),
              ("default_ov", "default + OpenVINO", "default", "openvino", "fp32"),
              ("lean32_torch", "LUnet Nf=32, torch", "lean32", "torch", "fp32"),
              ("lean32_ort", "LUnet Nf=32 + onnxruntime", "lean32", "onnxruntime", "fp32"),
              ("lean32_ov", "LUnet Nf=32 + OpenVINO", "lean32", "openvino", "fp32"),
              ("lean16_ov", "LUnet Nf=16 + OpenVINO", "lean16", "openvino", "fp32"),
              ("pruned_ov", "STAMP fold at 50 % channels + OpenVINO", "pruned", "openvino", "fp32"),
              ("lean32_ov_bf16", "LUnet Nf=32 + OpenVINO --bf16", "lean32", "openvino", "bf16")]


def untrained_fold(results: Path, pre: Path, trainer: str, configuration: str = "3d_fullres") -> Path:
    """A fold folder as nnUNetv2_train leaves it (plans.json, dataset.json, fold_0/checkpoint_final.pth)
    holding the trainer's network at its initial weights; a pruning trainer's is pruned to half its
    channels (random channels of the widest units)."""
    from nnunetv2.run.run_training import get_trainer_from_args

    folder = runs.fold_folder(results, trainer, "nnUNetPlans", configuration, 0)
    if (folder / "checkpoint_final.pth").exists():
        return folder
    t = get_trainer_from_args(pre.name, configuration, 0, trainer, "nnUNetPlans", device=torch.device("cpu"))
    t.initialize()
    mirror_axes = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]
    net = t.network
    if hasattr(net, "remove_picks"):
        from nnunet_lean.pruning.ranking import widest_picks
        net.remove_picks(widest_picks(net.widths(), sum(net.widths().values()) // 2, np.random.default_rng(0)))
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("plans.json", "dataset.json"):
        shutil.copy(pre / ("nnUNetPlans.json" if f == "plans.json" else f), folder.parent / f)
    torch.save({"network_weights": net.state_dict(), "trainer_name": trainer, "current_epoch": 0,
                "init_args": {"configuration": configuration, "fold": 0},
                "inference_allowed_mirroring_axes": mirror_axes},
               folder / "checkpoint_final.pth")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=sorted(DATASETS), default="airway")
    ap.add_argument("--spacing", type=float, default=1.0, help="mni: voxel size in mm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", nargs="+", default=[c[0] for c in CANDIDATES])
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/nnunet-lean/deploy-bench"))
    args = ap.parse_args()
    d, name, make = DATASETS[args.kind]
    if args.kind == "mni":
        make = make + ["--spacing", str(args.spacing)]
    work = Path(args.workdir).expanduser() / f"{args.kind}_{args.spacing:g}mm"
    budget = {"kind": args.kind, "spacing": args.spacing, "epochs": 0, "iters": 0}   # it trains nothing
    study = Study(str(work), str(BIN), str(TRAINERS), budget)
    study.prepare(d, name, ["-n", "2", "--num-test", "1", *make])
    raw, pre, results = study.folders(name)
    for k, v in study.env.items():   # untrained_fold runs nnU-Net in this process
        os.environ[k] = v
    folds = {key: untrained_fold(results, pre, trainer) for key, trainer in FOLDS.items()}
    exports = {}
    for key, folder in folds.items():
        exports[key] = work / "exports" / key
        if not (exports[key] / "manifest.json").exists():
            study.step(f"export_{key}", ["nnunet_lean", "export", "-d", str(d), "-c", "3d_fullres", "-tr",
                                         FOLDS[key], "-f", "0", "-o", str(exports[key]), "--overwrite"])
    store = work / "results.json"
    done = json.loads(store.read_text()) if store.exists() else []
    chosen = [c for c in CANDIDATES if c[0] in args.candidates]
    for rnd in range(args.rounds):
        for tta in (True, False):
            for key, label, fold, backend, precision in chosen:
                if key == "default_torch" and tta:
                    continue   # only its seconds per network call are needed: see the docstring
                if any(r["key"] == key and r["round"] == rnd and r["tta"] == tta for r in done):
                    continue
                done.append(measure(study, work, raw, d, key, fold, backend, precision, tta, rnd, exports,
                                    args.threads))
                write_json_atomically(done, str(store), indent=1)
                print(json.dumps(done[-1]), flush=True)
    write_text_atomically(summary(done, chosen, args, pre) + "\n", str(work / "results.md"))
    print((work / "results.md").read_text())
    return 0


def measure(study, work, raw, d, key, fold, backend, precision, tta, rnd, exports, threads) -> dict:
    out = work / "predictions" / f"{key}_{'tta' if tta else 'notta'}_r{rnd}"
    shutil.rmtree(out, ignore_errors=True)
    times = work / "network_times.json"
    times.unlink(missing_ok=True)
    common = ["-i", str(raw / "imagesTs"), "-o", str(out), "-npp", "1", "-nps", "1"] + \
        ([] if tta else ["--disable_tta"])
    if backend == "stock":
        cmd = ["nnUNetv2_predict", *common, "-d", str(d), "-c", "3d_fullres", "-tr", FOLDS[fold], "-f", "0",
               "-device", "cpu", "--disable_progress_bar"]
    else:
        where = ["-d", str(d), "-c", "3d_fullres", "-tr", FOLDS[fold], "-f", "0"] if backend == "torch" \
            else ["-m", str(exports[fold])]
        cmd = ["nnunet_lean", "predict", *common, *where, "--backend", backend, "--threads", str(threads),
               "--disable_progress_bar"] + (["--bf16"] if precision == "bf16" else [])
    # nnUNet_def_n_proc caps torch's threads while nnU-Net predicts: the stock run gets --threads too
    env = dict(study.env, NNUNET_LEAN_NETWORK_TIMES=str(times), OMP_NUM_THREADS=str(threads),
               nnUNet_def_n_proc=str(threads))
    m = commands.run_measured(cmd, env=env, log_path=str(work / "logs" / f"predict_{out.name}.log"), tree=True)
    if m.returncode != 0:
        raise CommandError(f"{' '.join(cmd)} failed (exit {m.returncode}):\n" + m.output[-3000:])
    net = json.loads(times.read_text()) if times.exists() else None
    return {"key": key, "round": rnd, "tta": tta, "seconds": m.seconds, "peak_tree_rss_mb": m.peak_tree_rss_mb,
            "network_seconds": net["seconds"] if net else None, "network_calls": net["calls"] if net else None}


def summary(done: list, chosen: list, args, pre: Path) -> str:
    patch = json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]["patch_size"]
    parts = [f"{args.kind}{'' if args.kind != 'mni' else f' at {args.spacing:g} mm'}, one test case, "
             f"patch {patch}, {args.threads} threads, medians over {args.rounds} rounds (`python "
             f"scripts/bench_deploy.py --kind {args.kind} --spacing {args.spacing:g} --rounds {args.rounds}`)"]
    for tta in (True, False):
        rows = []
        stock = {r["round"]: r for r in done if r["key"] == "stock" and r["tta"] == tta}
        per_call = [r["network_seconds"] / r["network_calls"] for r in done if r["key"] == "default_torch"]
        calls = [r["network_calls"] for r in done if r["tta"] == tta and r["network_calls"]]
        default_net = [statistics.median(per_call) * statistics.median(calls)] if per_call and calls else []
        for key, label, *_ in chosen:
            rs = [r for r in done if r["key"] == key and r["tta"] == tta]
            if not rs:
                continue
            ratio = [r["seconds"] / stock[r["round"]]["seconds"] for r in rs if r["round"] in stock]
            net = [r["network_seconds"] for r in rs if r["network_seconds"] is not None] or \
                (default_net if key == "stock" else [])
            sec = statistics.median(r["seconds"] for r in rs)
            rows.append({"candidate": label, "seconds": f"{sec:.1f}",
                         "ratio to stock": f"{statistics.median(ratio):.2f}" if ratio else "-",
                         "in network calls": f"{statistics.median(net):.1f} s ({statistics.median(net) / sec:.0%})"
                         + (" (estimated, see below)" if key == "stock" else "") if net else "-",
                         "peak memory, process tree":
                             f"{statistics.median(r['peak_tree_rss_mb'] for r in rs):,.0f} MB"})
        parts.append(f"Mirroring {'on' if tta else 'off'}:\n\n" + markdown_table(rows))
    parts.append("Stock run's network time: the torch-backend run's seconds per call (mirroring off) times the "
                 "number of calls. Memory: peak PSS summed over the prediction's processes.")
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "bench_deploy.py"))
