"""Do the deployment backends segment like torch, and what does --bf16 cost in Dice? On a trained fold.

    python scripts/deploy_agreement.py [--spacing 1] [--num-train 12 --num-test 3] [--epochs 10 --iters 15]
                                       [--backends openvino onnxruntime] [--workdir ~/.cache/nnunet-lean/deploy-agreement]

MNI152-based data at --spacing mm (`nnunet_lean make-dataset --kind mni`), nnUNetPlans 3d_fullres. LUnet Nf=32
(nnUNetTrainerLean's network and lean recipe; the budget trainer nnUNetTrainerLeanBudget, fold 0) trained by
the stock nnUNetv2_train; exported once (`nnunet_lean export`); then the held-out test cases predicted with
mirroring on (nnU-Net's default) by `nnunet_lean predict` with torch (the reference), each fp32 backend from
the export, and OpenVINO with --bf16. Each prediction is evaluated by nnUNetv2_evaluate_folder against the
ground truth (test Dice per label) and against torch's prediction (agreement: per-label Dice between the two
segmentations). Issue 15's goals: agreement >= 0.999 per label for the fp32 backends; bf16's test Dice within
0.1 point of fp32's per label. Resumable; writes results.md / results.json. Timings belong to bench_deploy.py.
The default budget is small (150 steps) because at 1 mm one training step (patch 128^3, batch 2) of LUnet
Nf=32 takes ~36 s on a 2-core CPU; the checks need a network that segments, not a converged one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nnunet_lean import runs
from nnunet_lean.errors import exit_on_error
from nnunet_lean.jsonio import write_json_atomically, write_text_atomically
from nnunet_lean.study import Study
from nnunet_lean.tables import markdown_table

BIN = Path(sys.executable).parent
TRAINERS = Path(__file__).resolve().parent / "bench_trainers"
DATASET = 997
TRAINER, PLANS = "nnUNetTrainerLeanBudget", "nnUNetPlans"
GOAL_AGREEMENT, GOAL_BF16_POINTS = 0.999, 0.1


def candidates(backends):
    """(key, label, backend, bf16): torch first (the reference)."""
    rows = [("torch", "LUnet Nf=32, torch fp32 (reference)", "torch", False)]
    rows += [(b, f"LUnet Nf=32 + {b} fp32", b, False) for b in backends]
    return rows + [("openvino_bf16", "LUnet Nf=32 + openvino --bf16", "openvino", True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spacing", type=float, default=1.0)
    ap.add_argument("--num-train", type=int, default=12)
    ap.add_argument("--num-test", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=["openvino", "onnxruntime"], choices=["openvino", "onnxruntime"])
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/nnunet-lean/deploy-agreement"))
    args = ap.parse_args()
    name = f"Dataset{DATASET}_LeanMNI{args.spacing:g}mm".replace(".", "p")
    study = Study(str(Path(args.workdir).expanduser() / f"mni_{args.spacing:g}mm"), str(BIN), str(TRAINERS),
                  {"epochs": args.epochs, "iters": args.iters, "num_train": args.num_train,
                   "num_test": args.num_test, "spacing": args.spacing})
    study.prepare(DATASET, name, ["-n", str(args.num_train), "--num-test", str(args.num_test), "--kind", "mni",
                                  "--spacing", str(args.spacing), "--name", name.split("_", 1)[1]])
    raw, _, results = study.folders(name)
    fold_dir = runs.fold_folder(results, TRAINER, PLANS, "3d_fullres", 0)
    if not (fold_dir / "checkpoint_final.pth").exists():
        study.step("train", study.train_command(DATASET, name, PLANS, TRAINER, 0), study.train_env)
    export = study.work / "export"
    if not (export / "manifest.json").exists():
        study.step("export", ["nnunet_lean", "export", "-d", str(DATASET), "-c", "3d_fullres", "-tr", TRAINER,
                              "-p", PLANS, "-f", "0", "-o", str(export), "--overwrite"])
    rows, store = [], study.work / "results.json"
    reference = study.work / "predictions" / "torch"
    for key, label, backend, bf16 in candidates(args.backends):
        out = study.work / "predictions" / key
        if not (out / "vs_truth" / "summary.json").exists():
            where = (["-d", str(DATASET), "-c", "3d_fullres", "-tr", TRAINER, "-p", PLANS, "-f", "0"]
                     if backend == "torch" else ["-m", str(export)])
            study.step(f"predict_{key}", ["nnunet_lean", "predict", "-i", str(raw / "imagesTs"), "-o", str(out),
                                          *where, "--backend", backend, "--threads", str(args.threads),
                                          "-npp", "1", "-nps", "1", "--disable_progress_bar",
                                          "--continue_prediction",   # an interrupted run keeps its finished cases
                                          *(["--bf16"] if bf16 else [])])
            study.evaluate(f"evaluate_{key}_vs_truth", name, PLANS, raw / "labelsTs", out,
                           out / "vs_truth" / "summary.json")
        if key != "torch" and not (out / "vs_torch" / "summary.json").exists():
            study.evaluate(f"evaluate_{key}_vs_torch", name, PLANS, reference, out, out / "vs_torch" / "summary.json")
        rows.append(row(key, label, out))
        write_json_atomically(rows, str(store), indent=1)
    labels = {str(v): k for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items() if v}
    header = (f"MNI at {args.spacing:g} mm, {args.num_train} training / {args.num_test} test cases, labels "
              f"{' / '.join(labels[k] for k in sorted(labels))}; LUnet Nf=32 "
              f"({TRAINER}, lean recipe, {args.epochs} x {args.iters} steps, fold 0), mirroring on, "
              f"{args.threads} threads (`python scripts/deploy_agreement.py --spacing {args.spacing:g} "
              f"--epochs {args.epochs} --iters {args.iters}`)")
    write_text_atomically(header + "\n\n" + markdown_table([display(r, fp32_of(r, rows)) for r in rows]) + "\n\n"
                          + goals(rows) + "\n", str(study.work / "results.md"))
    print((study.work / "results.md").read_text())
    return 0


def row(key: str, label: str, out: Path) -> dict:
    dice, per_label = runs.summary_dice(out / "vs_truth" / "summary.json")
    agree = runs.summary_dice(out / "vs_torch" / "summary.json")[1] if key != "torch" else None
    return {"key": key, "label": label, "test_dice": dice, "test_dice_per_label": per_label,
            "agreement_per_label": agree}


def fp32_of(r: dict, rows: list) -> dict:
    """The fp32 prediction a row is compared with: OpenVINO fp32 for bf16 (the flag's own effect), torch else."""
    wanted = "openvino" if r["key"].endswith("_bf16") else "torch"
    return next((x for x in rows if x["key"] == wanted), rows[0])


def change_points(r: dict, fp32: dict) -> dict:
    return {k: 100 * (v - fp32["test_dice_per_label"][k]) for k, v in r["test_dice_per_label"].items()}


def display(r: dict, fp32: dict) -> dict:
    labels = sorted(r["test_dice_per_label"])
    change = change_points(r, fp32)
    return {"prediction": r["label"],
            "test Dice per label": " / ".join(f"{r['test_dice_per_label'][k]:.4f}" for k in labels),
            "test Dice change vs fp32 (points)":
                f"{' / '.join(f'{change[k]:+.3f}' for k in labels)} (vs {fp32['key']})" if r is not fp32 else "",
            "agreement with torch (Dice per label)":
                " / ".join(f"{r['agreement_per_label'][k]:.5f}" for k in labels) if r["agreement_per_label"] else ""}


def goals(rows: list) -> str:
    lines = []
    for r in rows[1:]:
        if r["key"].endswith("_bf16"):
            fp32 = fp32_of(r, rows)
            worst_change = max(abs(c) for c in change_points(r, fp32).values())
            lines.append(f"- {r['label']}: largest per-label test Dice change vs {fp32['key']} fp32 {worst_change:.3f} points "
                         f"(goal <= {GOAL_BF16_POINTS}): {'met' if worst_change <= GOAL_BF16_POINTS else 'missed'}")
        else:
            worst_agree = min(r["agreement_per_label"].values())
            lines.append(f"- {r['label']}: lowest per-label agreement with torch {worst_agree:.5f} "
                         f"(goal >= {GOAL_AGREEMENT}): {'met' if worst_agree >= GOAL_AGREEMENT else 'missed'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "deploy_agreement.py"))
