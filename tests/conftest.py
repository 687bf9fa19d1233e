"""Shared fixtures: an isolated nnU-Net folder tree and a runner for stock CLI commands.

Every command runs in a subprocess with the same environment a user would have after
``pip install .``: the venv's bin/ on PATH, nnUNet_raw/preprocessed/results set, and CPU speed
knobs. ``nnUNet_extTrainer`` is set only where a test asks for the tiny test trainers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import pytest

TESTS = Path(__file__).resolve().parent
EXT_TRAINERS = str(TESTS / "ext_trainers")
BIN = str(Path(sys.executable).parent)


CLI_BATCH = """
import contextlib, io, json
from nnunet_lean.cli import main
def run(argvs):
    out = []
    for argv in json.loads(argvs):
        err, std = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            rc = main(argv)
        out.append([rc, err.getvalue(), std.getvalue()])
    print('RESULT' + json.dumps(out))
"""


class NNUNet:
    """An nnU-Net folder tree plus helpers to run stock commands against it."""

    def __init__(self, root: Path):
        self.root = root
        self.raw, self.pre, self.results = root / "raw", root / "preprocessed", root / "results"
        for p in (self.raw, self.pre, self.results):
            p.mkdir(parents=True, exist_ok=True)

    def env(self, ext_trainers: bool = False, training: bool = False,
            extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
        env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), nnUNet_raw=str(self.raw),
                   nnUNet_preprocessed=str(self.pre), nnUNet_results=str(self.results),
                   nnUNet_def_n_proc="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        if ext_trainers:
            env["nnUNet_extTrainer"] = EXT_TRAINERS
        if training:
            env["nnUNet_n_proc_DA"] = "0"  # breaks plan_and_preprocess: training only
        env.update(extra or {})
        return env

    def run(self, args: List[str], ext_trainers: bool = False, training: bool = False,
            check: bool = True, timeout: int = 900,
            extra_env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        start = time.monotonic()
        proc = subprocess.run(args, env=self.env(ext_trainers, training, extra_env), cwd=str(self.root),
                              capture_output=True, text=True, timeout=timeout)
        if os.environ.get("NNUNET_LEAN_TEST_TIMES"):  # where the suite's time goes: one line per command
            with open(os.environ["NNUNET_LEAN_TEST_TIMES"], "a") as f:
                cmd = " ".join(args).replace("\n", " ")   # (python -c code spans lines)
                cmd = cmd if len(cmd) <= 300 else cmd[:150] + " ... " + cmd[-150:]
                f.write(f"{time.monotonic() - start:.1f}\t{os.environ.get('PYTEST_CURRENT_TEST', '')}\t{cmd}\n")
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                                 f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
        return proc

    def python(self, code: str, **kw) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-c", code], **kw)

    def cli_batch(self, argvs: List[List[str]], **kw) -> List[list]:
        """Several `nnunet_lean` invocations in ONE process (each process start costs seconds): per argv,
        [exit code, stderr, stdout] of the CLI's main()."""
        proc = self.python(CLI_BATCH + f"\nrun({json.dumps(argvs)!r})", **kw)
        return json.loads(proc.stdout.split("RESULT", 1)[1])

    def dataset_dir(self, dataset_id: int, stage: str = "pre") -> Path:
        base = {"raw": self.raw, "pre": self.pre, "results": self.results}[stage]
        (hit,) = [p for p in base.iterdir() if p.name.startswith(f"Dataset{dataset_id:03d}_")]
        return hit


def side_by_side(*jobs):
    """Run the jobs in parallel threads (each starts its own command); re-raises a failed command's AssertionError."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return [done.result() for done in [pool.submit(job) for job in jobs]]


# for trainings run side by side: one torch thread each (the test trainers' ThreadsFromEnv)
ONE_CORE = {"NNUNET_LEAN_TEST_THREADS": "1"}


@pytest.fixture(scope="session")
def nnunet(tmp_path_factory) -> NNUNet:
    return NNUNet(tmp_path_factory.mktemp("nnunet"))


HIPPO_ID = 501
# the pruning tests' plans: nnUNetPlans' PlainConvUNet at widths 8..64 instead of 32..256 (a STAMPTiny run took 164 s
# on nnUNetPlans, 62 s on these, on 2 CPU cores, 2026-12-01); the stock plans' pruning runs are the studies'
PRUNE_PLANS = "nnUNetPlansScaled25"


@pytest.fixture(scope="session")
def hippo(nnunet: NNUNet) -> NNUNet:
    """Dataset 501: 12 + 2 synthetic cases at 32³, planned and preprocessed with nnUNetPlans
    (2d, 3d_fullres) and LeanPlanner (3d_fullres) by the stock command, plus PRUNE_PLANS (nnUNetPlans at a
    quarter of its widths, the same data) for the pruning trainers' runs."""
    nnunet.run(["nnunet_lean", "make-dataset", "-d", str(HIPPO_ID), "-n", "12", "--num-test", "2",
                "--size", "32", "--seed", "0"])
    nnunet.run(["nnUNetv2_plan_and_preprocess", "-d", str(HIPPO_ID), "-c", "2d", "3d_fullres",
                "--verify_dataset_integrity", "-np", "1", "1", "-npfp", "1"])
    nnunet.run(["nnUNetv2_plan_and_preprocess", "-d", str(HIPPO_ID), "-pl", "LeanPlanner",
                "-c", "3d_fullres", "-np", "1", "-npfp", "1"])
    nnunet.run(["nnunet_lean", "modify-plans", "-d", str(HIPPO_ID), "-p", "nnUNetPlans", "--scale", "0.25",
                "-o", PRUNE_PLANS])
    return nnunet


STAMP = "nnUNetTrainerSTAMPTiny"


@pytest.fixture(scope="session")
def stamp(hippo: NNUNet) -> NNUNet:
    """Folds 0 and 1 of nnUNetTrainerSTAMPTiny on PRUNE_PLANS 3d_fullres (--npz), side by side: they end at
    different widths. Shared by the pruning and deployment tests."""
    side_by_side(*(lambda fold=fold: hippo.run(
        ["nnUNetv2_train", str(HIPPO_ID), "3d_fullres", str(fold), "-tr", STAMP, "-p", PRUNE_PLANS, "-device", "cpu",
         "--npz"], ext_trainers=True, training=True, extra_env=ONE_CORE) for fold in (0, 1)))
    return hippo


@pytest.fixture(scope="session")
def stamp_predicted(stamp: NNUNet, tmp_path_factory) -> Path:
    """Stock nnUNetv2_predict of the test cases by the two STAMP folds together (with --save_probabilities, as
    for ensembling): the reference of the deployment and export tests."""
    out = tmp_path_factory.mktemp("stamp_predicted") / "folds01"
    stamp.run(["nnUNetv2_predict", "-i", str(stamp.dataset_dir(HIPPO_ID, "raw") / "imagesTs"), "-o", str(out),
               "-d", str(HIPPO_ID), "-c", "3d_fullres", "-tr", STAMP, "-p", PRUNE_PLANS, "-f", "0", "1",
               "-device", "cpu", "-npp", "1", "-nps", "1", "--save_probabilities"], ext_trainers=True)
    return out


def load_json(path: Path) -> dict:
    import json
    with open(path) as f:
        return json.load(f)


def fold_dir(nnunet: NNUNet, trainer: str, plans: str, config: str, fold: Optional[int] = 0) -> Path:
    d = nnunet.dataset_dir(HIPPO_ID, "results") / f"{trainer}__{plans}__{config}"
    return d if fold is None else d / f"fold_{fold}"


def labels_of(folder: Path) -> dict:
    """Case file name -> label array of every segmentation in ``folder``."""
    import SimpleITK as sitk
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(Path(folder).glob("*.nii.gz"))}


def per_label_dice(a: dict, b: dict) -> dict:
    """Dice per label over all cases (voxels pooled), labels present in either."""
    import numpy as np
    assert a.keys() == b.keys() and a
    x, y = np.concatenate([a[k].ravel() for k in a]), np.concatenate([b[k].ravel() for k in a])
    return {int(k): 2 * np.sum((x == k) & (y == k)) / (np.sum(x == k) + np.sum(y == k))
            for k in np.union1d(np.unique(x), np.unique(y)) if k > 0}
