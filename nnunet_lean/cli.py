"""The ``nnunet_lean`` command: make-dataset, modify-plans, report, plan, plot-pruning, pruned-plans,
deep-supervision-dice, dice-vs-time, export, predict.

Errors a user can fix print one line (``nnunet_lean: error: ...``) and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from nnunet_lean.errors import EXIT_USAGE, LeanError
from nnunet_lean.widths import WidthChoice


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


DATASETS = {  # kind: (default name, modality, description)
    "hippocampus": ("LeanHippocampus", "T1", "synthetic hippocampus-like T1 MRI"),
    "airway": ("LeanAirway", "CT", "synthetic airway-tree-like CT (trachea task)"),
    "mni": ("LeanMNI", "T1", "MNI152 template, randomly deformed, grey/white matter labels"),
}


def cmd_make_dataset(args: argparse.Namespace) -> None:
    from nnunet_lean.datasets import airway, hippocampus, mni
    from nnunet_lean.datasets.raw import write_dataset

    name, modality, description = DATASETS[args.kind]
    base = args.seed * 100_000
    if args.kind == "hippocampus":
        labels = hippocampus.LABELS_MULTI if args.multilabel else hippocampus.LABELS_SINGLE
        case, spacing = (lambda i: hippocampus.make_case(base + i, size=args.size or 48,
                                                         multilabel=args.multilabel)), 1.0
    elif args.kind == "airway":
        labels, spacing = airway.LABELS, 1.0
        case = lambda i: airway.make_case(base + i, size=args.size or 64)
    else:
        labels, spacing = mni.LABELS, args.spacing
        mni.template_folder()  # a missing template fails before anything is written
        case = lambda i: mni.make_case(base + i, spacing=args.spacing)
    folder = write_dataset(args.d, args.name or name, labels, {"0": modality}, case, args.num_train,
                           args.num_test, spacing=(spacing,) * 3, overwrite=args.overwrite,
                           extra={"description": f"nnunet-lean {description}", "seed": args.seed})
    print(f"wrote {args.num_train} training and {args.num_test} test cases to {folder}")


def cmd_modify_plans(args: argparse.Namespace) -> None:
    from nnunet_lean.plans_modifier import format_changes, modify_plans

    if args.nf is not None and args.nf < 1:  # named by its flag here; WidthChoice refuses it too
        raise LeanError(f"--nf must be >= 1, got {args.nf}")
    choice = WidthChoice(nf=args.nf, scale=args.scale, budget=args.budget, base=args.base)
    path, changes = modify_plans(str(args.d), args.p, choice, args.o, args.c, args.overwrite, args.dry_run)
    print(format_changes(changes))
    print(("would write " if args.dry_run else "wrote ") + path)


def cmd_plan(args: argparse.Namespace) -> None:
    """Fingerprint (if missing), plan with one of our planners, optionally preprocess.

    The stock ``nnUNetv2_plan_experiment -pl`` does the same after a non-editable install; this
    command exists for editable installs, where nnU-Net cannot see our planners.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_lean import planning

    planner = getattr(planning, args.pl, None)
    if not (isinstance(planner, type) and args.pl.endswith("Planner")):
        names = [n for n in dir(planning) if n.endswith("Planner")]
        raise LeanError(f"unknown planner {args.pl!r}: use one of {', '.join(names)}")
    try:
        name = maybe_convert_to_dataset_name(args.d)
    except RuntimeError:
        raise LeanError(f"unknown dataset {args.d}: check -d and nnUNet_raw") from None
    if not os.path.isfile(os.path.join(nnUNet_preprocessed or "", name, "dataset_fingerprint.json")):
        extract_fingerprints([args.d], num_processes=args.np)
    _, plans_identifier = plan_experiment_dataset(args.d, planner)
    if args.preprocess:
        preprocess_dataset(args.d, plans_identifier, args.c, [args.np] * len(args.c))


def cmd_plot_pruning(args: argparse.Namespace) -> None:
    from nnunet_lean.pruning.plots import plot_fold

    print("wrote " + plot_fold(args.fold_dir, args.o))


def cmd_pruned_plans(args: argparse.Namespace) -> None:
    from nnunet_lean.pruning.plans import pruned_plans

    path, channels = pruned_plans(str(args.d), args.fold_dir, args.o, args.overwrite)
    print(f"wrote {path} ({channels} channels in its conv units); retrain from scratch with "
          f"nnUNetv2_train {args.d} CONFIGURATION FOLD -p {args.o}")


def cmd_report(args: argparse.Namespace) -> None:
    from nnunet_lean.measure import report

    repeats = {k: v for k, v in (("step_repeats", args.step_repeats), ("predict_repeats", args.predict_repeats))
               if v is not None}  # unset: measure's defaults
    results, meta = report.report(str(args.d), args.c, args.p, args.tr, args.pruned, args.device, **repeats,
                                  cpu_bf16=args.cpu_bf16)
    out = args.o or f"report_{meta['dataset']}_{args.p}_{args.c}"
    text, json_path = report.write(results, meta, out)
    print(text)
    print(f"\nwrote {out}.md and {json_path}")


def cmd_deep_supervision_dice(args: argparse.Namespace) -> None:
    from nnunet_lean.deep_supervision import deep_supervision_dice, format_row

    from nnunet_lean.jsonio import write_json_atomically

    folds = []
    for fold_dir in args.fold_dirs:
        result = deep_supervision_dice(fold_dir, args.device, args.cases)
        print(format_row(fold_dir, result), flush=True)
        folds.append({"fold_dir": os.path.abspath(fold_dir), "cases": args.cases,
                      "outputs": [{"factor": list(o.factor), "dice": o.dice, "dice_per_label": o.dice_per_label}
                                  for o in result]})
    if args.o:
        write_json_atomically(folds, args.o, indent=1)


def cmd_dice_vs_time(args: argparse.Namespace) -> None:
    from nnunet_lean.measure import dice_time

    result = dice_time.compare(args.fold_dirs, args.reference)
    paths = dice_time.write(result, args.o)
    print(dice_time.markdown(result))
    print("\nwrote " + ", ".join(paths))


def cmd_export(args: argparse.Namespace) -> None:
    from nnunet_lean.deploy.export import export, model_folder

    from nnunet_lean.deploy.export import DEFAULT_FOLDS

    data = export(model_folder(args.d, args.tr, args.p, args.c), args.f or DEFAULT_FOLDS, args.o, args.chk,
                  args.opset, args.overwrite)
    for e in data["folds"]:
        c = e["self_check"]
        print(f"fold {e['fold']}: {e['file']} ({e['parameters']:,} parameters), max |onnx - torch| "
              f"{c['max_abs_diff']:.2e} of logit range {c['logit_range']:.3g}")
    print(f"wrote {args.o} (opset {data['opset']}, fp32, patch {data['input']['patch_size']})")


def cmd_predict(args: argparse.Namespace) -> None:
    from nnunet_lean.deploy.predict import PredictOptions, predict

    options = PredictOptions(backend=args.backend, threads=args.threads, precision="bf16" if args.bf16 else "fp32",
                             step_size=args.step_size, disable_tta=args.disable_tta,
                             save_probabilities=args.save_probabilities, npp=args.npp, nps=args.nps,
                             continue_prediction=args.continue_prediction, verbose=args.verbose,
                             progress_bar=not args.disable_progress_bar)
    if args.m is not None and args.d is not None:
        raise LeanError("give either -m EXPORT_FOLDER or -d/-c/-tr/-p, not both")
    predict(args.i, args.o, options, export_folder=args.m, dataset=args.d, trainer=args.tr, plans=args.p,
            configuration=args.c, folds=args.f, checkpoint=args.chk)


def _trained_run_args(parser: argparse.ArgumentParser, required: bool, folds_help: str) -> None:
    """nnU-Net's -d/-c/-tr/-p/-f/-chk, as nnUNetv2_predict and nnUNetv2_export_model_to_zip take them."""
    parser.add_argument("-d", required=required, default=None, help="dataset id or name")
    parser.add_argument("-c", required=required, default=None, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-tr", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-f", nargs="+", default=None, help=folds_help)
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default: checkpoint_final.pth)")


def build_parser() -> argparse.ArgumentParser:
    # (not the module docstring's first line: it stops mid-list of the commands)
    p = argparse.ArgumentParser(prog="nnunet_lean",
                                description="nnunet-lean: lean U-Nets, pruning and deployment for nnU-Net v2")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-dataset", help="write a synthetic or template-based dataset to nnUNet_raw")
    m.add_argument("-d", type=int, required=True, help="dataset id (1..999)")
    m.add_argument("--kind", choices=sorted(DATASETS), default="hippocampus")
    m.add_argument("--name", default=None, help="dataset name (default by kind: LeanHippocampus, ...)")
    m.add_argument("-n", "--num-train", type=int, default=20)
    m.add_argument("--num-test", type=int, default=4)
    m.add_argument("--size", type=_positive_int, default=None,
                   help="edge length in voxels at 1 mm (hippocampus: 48, airway: 64)")
    m.add_argument("--spacing", type=_positive_float, default=3.0, help="mni: voxel size in mm (template is 1 mm)")
    m.add_argument("--multilabel", action="store_true", help="hippocampus: label head (1) and body/tail (2)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace a dataset with the same id")
    m.set_defaults(func=cmd_make_dataset)

    mp = sub.add_parser("modify-plans", help="derive plans with lean / scaled / budgeted widths")
    mp.add_argument("-d", required=True, help="dataset id or name")
    mp.add_argument("-p", default="nnUNetPlans", help="source plans identifier")
    mp.add_argument("-o", default=None, help="target plans identifier (default: derived from -p)")
    mp.add_argument("-c", nargs="+", default=None, help="configurations (default: all with a network)")
    g = mp.add_mutually_exclusive_group(required=True)
    g.add_argument("--nf", type=int, help="constant width per stage (LUnet)")
    g.add_argument("--scale", type=float, help="linear factor on the plan's widths, e.g. 0.5")
    g.add_argument("--budget", type=int, help="largest lean Nf within this many parameters")
    g.add_argument("--base", type=int, help="nnU-Net's doubling from this width (capped at the plan's widest)")
    mp.add_argument("--overwrite", action="store_true", help="replace an existing target plans file")
    mp.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    mp.set_defaults(func=cmd_modify_plans)

    pp = sub.add_parser("plot-pruning", help="draw Fig. 3 (channels per block) of a pruning run's fold")
    pp.add_argument("fold_dir", help="nnUNet_results/DatasetX/TRAINER__PLANS__CONFIG/fold_N")
    pp.add_argument("-o", default=None, help="PNG path (default: FOLD_DIR/pruning.png)")
    pp.set_defaults(func=cmd_plot_pruning)

    pr = sub.add_parser("pruned-plans", help="plans with the pruned architecture of a finished run, to "
                                              "retrain from scratch")
    pr.add_argument("-d", required=True, help="dataset id or name")
    pr.add_argument("fold_dir", help="fold_N folder of a finished pruning run")
    pr.add_argument("-o", required=True, help="target plans identifier")
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=cmd_pruned_plans)

    rp = sub.add_parser("report", help="parameters, FLOPs, memory, step and prediction time: default vs "
                                        "lean / scaled / pruned, in one process")
    rp.add_argument("-d", required=True, help="dataset id or name")
    rp.add_argument("-c", default="3d_fullres")
    rp.add_argument("-p", default="nnUNetPlans", help="plans whose topology, patch and batch are used")
    rp.add_argument("-tr", nargs="*", default=[], help="trainers whose networks to compare, e.g. nnUNetTrainerLean")
    rp.add_argument("--pruned", nargs="*", default=[], help="fold folders of finished (pruning) runs, "
                                                              "measured at their trained widths")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--cpu-bf16", action="store_true", help="training steps under bf16 autocast on the CPU "
                                                             "(as the studies train there; predictions stay fp32)")
    rp.add_argument("--step-repeats", type=_positive_int, default=None, help="timed steps per network")
    rp.add_argument("--predict-repeats", type=_positive_int, default=None,
                    help="timed predictions per network")
    rp.add_argument("-o", default=None, help="output prefix for .md and .json (default: ./report_...)")
    rp.set_defaults(func=cmd_report)

    ds = sub.add_parser("deep-supervision-dice", help="Dice of each deep-supervision output of trained folds "
                        "on their validation cases: which resolution has learned")
    ds.add_argument("fold_dirs", nargs="+", metavar="FOLD_DIR", help=".../TRAINER__PLANS__CONFIG/fold_N")
    ds.add_argument("-device", default="cpu")
    ds.add_argument("--cases", choices=["val", "train"], default="val",
                    help="the fold's validation cases (default) or its training cases (how well it fits them)")
    ds.add_argument("-o", help="also write the results to this JSON file (a list, one entry per fold)")
    ds.set_defaults(func=cmd_deep_supervision_dice)

    dt = sub.add_parser("dice-vs-time", help="validation pseudo-Dice against training time of fold folders: a PNG "
                                             "and a table (time and epochs to 99 %% of the reference's final Dice)")
    dt.add_argument("fold_dirs", nargs="+", metavar="FOLD_DIR", help=".../TRAINER__PLANS__CONFIG/fold_N")
    dt.add_argument("-o", required=True, help="OUT.png (OUT.md and OUT.json beside it)")
    dt.add_argument("--reference", default=None, help="fold folder whose final Dice sets the target "
                                                      "(default: the first FOLD_DIR)")
    dt.set_defaults(func=cmd_dice_vs_time)

    ex = sub.add_parser("export", help="export trained folds to ONNX (fp32, self-checked against torch) with a "
                                       "manifest, for nnunet_lean predict -m")
    _trained_run_args(ex, required=True, folds_help="folds (default: 0 1 2 3 4)")
    ex.add_argument("-o", required=True, help="export folder to create")
    ex.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    ex.set_defaults(func=cmd_export)

    pd = sub.add_parser("predict", help="nnU-Net's predictor with the network run by a CPU backend "
                                        "(torch, onnxruntime, openvino)")
    pd.add_argument("-i", required=True, help="input folder (as for nnUNetv2_predict)")
    pd.add_argument("-o", required=True, help="output folder")
    pd.add_argument("-m", default=None, help="export folder (nnunet_lean export); instead of -d/-c/-tr/-p")
    _trained_run_args(pd, required=False, folds_help="folds (default: 0 1 2 3 4; with -m: every exported fold)")
    pd.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default="openvino")
    pd.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1,
                    help="threads of the network backend (default: all cores)")
    pd.add_argument("--bf16", action="store_true", help="run the network in bfloat16 (openvino, torch); changes "
                                                         "the logits: check the Dice (README)")
    pd.add_argument("-step_size", type=float, default=0.5)
    pd.add_argument("--disable_tta", action="store_true", help="no mirroring")
    pd.add_argument("--save_probabilities", action="store_true")
    pd.add_argument("-npp", type=int, default=3, help="preprocessing processes (0 with -nps 0: sequential)")
    pd.add_argument("-nps", type=int, default=3, help="segmentation export processes")
    pd.add_argument("--continue_prediction", action="store_true")
    pd.add_argument("--verbose", action="store_true")
    pd.add_argument("--disable_progress_bar", action="store_true")
    pd.set_defaults(func=cmd_predict)

    pl = sub.add_parser("plan", help="plan (and preprocess) with a lean planner (for editable installs)")
    pl.add_argument("-d", type=int, required=True)
    pl.add_argument("-pl", default="LeanPlanner")
    pl.add_argument("--preprocess", action="store_true")
    pl.add_argument("-c", nargs="+", default=["2d", "3d_fullres", "3d_lowres"])
    pl.add_argument("-np", type=int, default=1)
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """The only place that turns the library's errors (:class:`LeanError`) into one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LeanError as e:
        print(f"nnunet_lean: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
