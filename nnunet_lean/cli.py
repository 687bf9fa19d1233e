"""The ``nnunet_lean`` command: make-dataset, modify-plans, plan, plot-pruning, pruned-plans.

Errors a user can fix print one line (``nnunet_lean: error: ...``) and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from nnunet_lean.widths import WidthChoice

EXIT_USAGE = 2


class UserError(Exception):
    """An error whose message tells the user what to change."""


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def cmd_make_dataset(args: argparse.Namespace) -> None:
    from nnunet_lean.datasets import hippocampus
    from nnunet_lean.datasets.raw import write_dataset

    labels = hippocampus.LABELS_MULTI if args.multilabel else hippocampus.LABELS_SINGLE
    base = args.seed * 100_000

    def case(i: int):
        return hippocampus.make_case(base + i, size=args.size, multilabel=args.multilabel)

    folder = write_dataset(args.d, args.name, labels, {"0": "T1"}, case, args.num_train, args.num_test,
                           spacing=(1.0, 1.0, 1.0), overwrite=args.overwrite,
                           extra={"description": "nnunet-lean synthetic hippocampus-like T1 MRI",
                                  "seed": args.seed, "size": args.size})
    print(f"wrote {args.num_train} training and {args.num_test} test cases to {folder}")


def cmd_modify_plans(args: argparse.Namespace) -> None:
    from nnunet_lean.plans_modifier import format_changes, modify_plans

    if args.nf is not None and args.nf < 1:  # WidthChoice reads nf=0 as "the plan's base width"
        raise UserError(f"--nf must be >= 1, got {args.nf}")
    try:
        choice = WidthChoice(nf=args.nf, scale=args.scale, budget=args.budget)
    except ValueError as e:
        raise UserError(str(e)) from None
    path, changes = modify_plans(str(args.d), args.p, choice, args.o, args.c, args.overwrite, args.dry_run)
    print(format_changes(changes))
    print(("would write " if args.dry_run else "wrote ") + path)


def cmd_plan(args: argparse.Namespace) -> None:
    """Fingerprint (if missing), plan with one of our planners, optionally preprocess.

    The stock ``nnUNetv2_plan_experiment -pl`` does the same after a non-editable install; this
    command exists for editable installs, where nnU-Net cannot see our planners.
    """
    import os

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_lean import planning

    planner = getattr(planning, args.pl, None)
    if not (isinstance(planner, type) and args.pl.endswith("Planner")):
        names = [n for n in dir(planning) if n.endswith("Planner")]
        raise UserError(f"unknown planner {args.pl!r}: use one of {', '.join(names)}")
    try:
        name = maybe_convert_to_dataset_name(args.d)
    except RuntimeError:
        raise UserError(f"unknown dataset {args.d}: check -d and nnUNet_raw") from None
    if not os.path.isfile(os.path.join(nnUNet_preprocessed or "", name, "dataset_fingerprint.json")):
        extract_fingerprints([args.d], num_processes=args.np)
    _, plans_identifier = plan_experiment_dataset(args.d, planner)
    if args.preprocess:
        preprocess_dataset(args.d, plans_identifier, args.c, [args.np] * len(args.c))


def cmd_plot_pruning(args: argparse.Namespace) -> None:
    from nnunet_lean.pruning.plots import plot_fold

    try:
        print("wrote " + plot_fold(args.fold_dir, args.o))
    except FileNotFoundError as e:
        raise UserError(str(e)) from None


def cmd_pruned_plans(args: argparse.Namespace) -> None:
    from nnunet_lean.plans_modifier import pruned_plans

    path, channels = pruned_plans(str(args.d), args.fold_dir, args.o, args.overwrite)
    print(f"wrote {path} ({channels} channels in its conv units); retrain from scratch with "
          f"nnUNetv2_train {args.d} CONFIGURATION FOLD -p {args.o}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnunet_lean", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-dataset", help="write a synthetic hippocampus-like dataset to nnUNet_raw")
    m.add_argument("-d", type=int, required=True, help="dataset id (1..999)")
    m.add_argument("--name", default="LeanHippocampus")
    m.add_argument("-n", "--num-train", type=int, default=20)
    m.add_argument("--num-test", type=int, default=4)
    m.add_argument("--size", type=_positive_int, default=48, help="edge length in voxels (1 mm)")
    m.add_argument("--multilabel", action="store_true", help="label head (1) and body/tail (2)")
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

    pl = sub.add_parser("plan", help="plan (and preprocess) with a lean planner (for editable installs)")
    pl.add_argument("-d", type=int, required=True)
    pl.add_argument("-pl", default="LeanPlanner")
    pl.add_argument("--preprocess", action="store_true")
    pl.add_argument("-c", nargs="+", default=["2d", "3d_fullres", "3d_lowres"])
    pl.add_argument("-np", type=int, default=1)
    pl.set_defaults(func=cmd_plan)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from nnunet_lean.datasets.raw import DatasetError
    from nnunet_lean.plans_modifier import PlansError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, DatasetError, PlansError) as e:
        print(f"nnunet_lean: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
