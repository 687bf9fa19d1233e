"""Resumable studies run through the stock nnU-Net commands (scripts/reproduce_lunet.py,
scripts/compare_lean_default.py): every step is skipped when its result exists, so a study
interrupted in one session goes on in the next; a study resumes only with the budget it began with.
With a ledger (nnunet_lean.ledger) the finished runs' results outlive their folders."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from nnunet_lean import commands, runs
from nnunet_lean.errors import StudyError  # noqa: F401 (scripts import it from here)
from nnunet_lean.jsonio import write_json_atomically
from nnunet_lean.ledger import Ledger, run_key
from nnunet_lean.measure import dice_time
from nnunet_lean.pruning.state import HISTORY_FILE, read_history
from nnunet_lean.precision import CPU_BF16_ENV, require_native_bf16

DEEP_SUPERVISION_JSON = "deep_supervision_dice.json"  # beside the test predictions' summary.json
TRAINING_DICE_JSON = "training_dice.json"  # the same on the fold's training cases (how well the network fits them)
BUDGET_ENV = ("NNUNET_LEAN_BUDGET_EPOCHS", "NNUNET_LEAN_BUDGET_ITERS")  # read by scripts/bench_trainers
PAUSE_ENV = "NNUNET_LEAN_PAUSE_FILE"  # while this file exists, a study's training holds between two epochs


def wait_while_paused(log: Callable[[str], None], poll_s: float = 5.0) -> float:
    """Called before an epoch's start timestamp is logged: while the file named by $NNUNET_LEAN_PAUSE_FILE
    exists, wait, so that a pause (for tests, another job) does not count as the epoch's training time
    (SIGSTOP inside an epoch would). Returns the seconds waited; no variable, no wait."""
    path = os.environ.get(PAUSE_ENV)
    if not path or not os.path.exists(path):
        return 0.0
    began = time.time()
    log(f"paused: {path} exists; remove it to go on")
    while os.path.exists(path):
        time.sleep(poll_s)
    waited = time.time() - began
    log(f"resumed after {waited:.0f} s paused (not counted in the epoch's time)")
    return waited


def budget_training_environment(workdir: str, bin_dir: str, ext_trainers: str, budget: Dict[str, object],
                                device: str = "cpu") -> Dict[str, str]:
    """Environment of ``nnUNetv2_train`` with a budget trainer (scripts/bench_trainers): the folders under
    ``workdir``, the trainers' folder, the budget's epochs x iterations, bf16 steps when it says so."""
    env = dict(commands.nnunet_environment(workdir, bin_dir, training=True, device=device),
               nnUNet_extTrainer=ext_trainers, **dict(zip(BUDGET_ENV, (str(budget["epochs"]), str(budget["iters"])))))
    if budget.get("precision") == "bf16":
        env[CPU_BF16_ENV] = "1"
    return env


def training_steps_text(precision: str, device: str) -> str:
    """How a study's training steps ran, for its results header: a CPU study's precision, or nnU-Net's own fp16
    autocast on a GPU (where the budget's precision does not apply)."""
    if device == "cpu":
        return f"training steps in {precision} on the CPU"
    return f"training steps under nnU-Net's fp16 autocast on {device}"


class Study:
    def __init__(self, workdir: str, bin_dir: str, ext_trainers: str, budget: Dict[str, object],
                 create: bool = True, device: str = "cpu", ledger: Optional[str] = None):
        """``create=False`` opens only a study already begun in ``workdir`` (StudyError otherwise).
        ``device``: nnU-Net's -device for training and prediction (not part of the budget: a study begun
        on the CPU may go on on a GPU). ``budget["precision"] == "bf16"`` (optional; part of the budget, so a
        study is never resumed in another precision): the budget trainers train with bf16 autocast on a CPU
        (nnunet_lean.precision); on a GPU nnU-Net's own fp16 autocast applies either way. ``ledger``: a JSON
        file (nnunet_lean.ledger) that records every finished run's result; a run recorded there is finished
        even where its folder is gone, and a study with a ledger may be opened where its folder is gone too."""
        self.work = Path(workdir).expanduser().resolve()
        self.device = device
        self.bf16_on_cpu = budget.get("precision") == "bf16" and device == "cpu"
        if create:
            self._check_precision()   # before anything is written: the trainer would refuse after the data were made
        self.ledger = Ledger(ledger, budget) if ledger else None
        self._check_budget(budget, create or bool(self.ledger and self.ledger.runs))
        self.env = dict(commands.nnunet_environment(str(self.work), bin_dir), nnUNet_extTrainer=ext_trainers)
        self.train_env = budget_training_environment(str(self.work), bin_dir, ext_trainers, budget, device)
        self.step = commands.run_steps(str(self.work / "logs"), self.env)

    def _check_precision(self) -> None:
        """A bf16 study trains on a CPU only where it has native bf16 (nnunet_lean.precision)."""
        if self.bf16_on_cpu:
            require_native_bf16("go on with this bf16 study on a CPU that has it or on a GPU (--device cuda), or "
                                "start it anew in fp32 (--precision fp32)")

    def _check_budget(self, budget: Dict[str, object], create: bool) -> None:
        path = self.work / "budget.json"
        if not (path.exists() or create):
            raise StudyError(f"no study in {self.work}" + (f" and no run in ledger {self.ledger.path}" if self.ledger else "")
                             + ": run it without --summary-only first" + ("" if self.ledger else " (or give its --ledger)"))
        if path.exists():
            started = json.loads(path.read_text())
            if started != budget:
                raise StudyError(f"{self.work} holds a study with budget {started}: rerun with those values "
                         f"or give another --workdir")
        else:
            self.work.mkdir(parents=True, exist_ok=True)
            write_json_atomically(budget, str(path))

    def folders(self, name: str):
        """raw, preprocessed and results folders of dataset ``name``."""
        return tuple(self.work / kind / name for kind in ("raw", "preprocessed", "results"))

    def prepare(self, dataset_id: int, name: str, make_dataset_args: Sequence[str]) -> None:
        raw, pre, _ = self.folders(name)
        if not (raw / "dataset.json").exists():
            self.step(f"dataset_{dataset_id}", ["nnunet_lean", "make-dataset", "-d", str(dataset_id),
                                                *make_dataset_args])
        if not self._preprocessed(raw, pre):
            self.step(f"plan_{dataset_id}", ["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id),
                                             "-c", "3d_fullres", "-np", "1", "-npfp", "1"])

    @staticmethod
    def _preprocessed(raw: Path, pre: Path) -> bool:
        """nnUNetv2_plan_and_preprocess finished: it copies the training labels to gt_segmentations last (an
        interrupted run leaves fewer, and is rerun: it rebuilds its output folders from scratch)."""
        gt = pre / "gt_segmentations"
        return gt.is_dir() and len(list(gt.iterdir())) == len(list((raw / "labelsTr").iterdir()))

    def _run(self, name: str, plans: str, trainer: str, fold: int):
        """fold folder, tag and prediction folder of one run."""
        tag = f"{trainer}_{plans}_f{fold}"
        fold_dir = runs.fold_folder(self.folders(name)[2], trainer, plans, "3d_fullres", fold)
        return fold_dir, tag, self.work / "predictions" / name / tag

    def result(self, name: str, plans: str, trainer: str, fold: int) -> Optional[dict]:
        """Of a finished run: parameters, epoch time, first epoch with foreground, test Dice (foreground mean, per
        label, and per label and case), nnU-Net's final validation Dice, the validation Dice of each
        deep-supervision output, the full-resolution Dice on the fold's training cases (foreground mean and per
        label), None where not measured, a pruning run's history (None for other runs) and its Dice-vs-time
        curve; the ledger records it once both Dice files are there. Where the run's folders are gone, its
        ledger record; None while it is not finished."""
        fold_dir, _, pred = self._run(name, plans, trainer, fold)
        key = run_key(name, plans, trainer, fold)
        if not ((fold_dir / "checkpoint_final.pth").exists() and (pred / "summary.json").exists()):
            return self.ledger.get(key) if self.ledger else None
        trained = runs.TrainedFold.open(fold_dir)
        ckpt = trained.load("checkpoint_final.pth")
        dice, dice_per_label = runs.summary_dice(pred / "summary.json")
        val, train = self._outputs(pred / DEEP_SUPERVISION_JSON), self._outputs(pred / TRAINING_DICE_JSON)
        history, validation = fold_dir / HISTORY_FILE, fold_dir / "validation" / "summary.json"
        result = {"fold": fold, "plans": plans, "trainer": trainer, "fold_dir": str(fold_dir),
                  "parameters": runs.checkpoint_parameters(ckpt),
                  "median_epoch_s": runs.median_epoch_seconds(ckpt),
                  "first_learning_epoch": runs.first_learning_epoch(ckpt),
                  "dice": dice, "dice_per_label": dice_per_label,
                  "dice_per_case": runs.summary_dice_per_case(pred / "summary.json"),
                  "validation_dice": runs.foreground_dice(validation) if validation.exists() else None,
                  "validation_dice_per_output": [o["dice"] for o in val] if val else None,
                  "training_dice": train[0]["dice"] if train else None,
                  "training_dice_per_label": train[0]["dice_per_label"] if train else None,
                  "pruning_history": read_history(str(fold_dir)) if history.exists() else None,
                  "curve": dice_time.curve(trained, ckpt.get("logging"))}
        if self.ledger and val and train:
            self.ledger.record(key, result)
        return result

    @staticmethod
    def _outputs(path: Path) -> Optional[List[dict]]:
        """The outputs (full resolution first) that `nnunet_lean deep-supervision-dice -o` wrote for one fold;
        None if not measured."""
        return json.loads(path.read_text())[0]["outputs"] if path.exists() else None

    def evaluate(self, step_name: str, name: str, plans: str, truth: Path, pred: Path,
                 summary: Optional[Path] = None) -> None:
        """nnUNetv2_evaluate_folder of ``pred`` against ``truth`` (labelsTs, or another prediction) with the
        dataset's dataset.json and ``plans``; into ``summary`` (default: ``pred``/summary.json)."""
        raw, pre, _ = self.folders(name)
        cmd = ["nnUNetv2_evaluate_folder", str(truth), str(pred), "-djfile", str(raw / "dataset.json"),
               "-pfile", str(pre / f"{plans}.json"), "-np", "1"]
        if summary is not None:
            summary.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["-o", str(summary)]
        self.step(step_name, cmd)

    def train_command(self, dataset_id: int, name: str, plans: str, trainer: str, fold: int) -> List[str]:
        """Stock nnUNetv2_train; with --c where an interrupted run left checkpoint_latest.pth (nnU-Net
        writes it every ``save_every`` epochs), so a session's cut-off costs at most that many epochs; with
        --val where training ended (checkpoint_final.pth) but its final validation did not (nnU-Net saves the
        final checkpoint and removes the latest before it validates the fold)."""
        fold_dir = self._run(name, plans, trainer, fold)[0]
        if (fold_dir / "checkpoint_final.pth").exists():
            resume = ["--val"]
        else:
            resume = ["--c"] if (fold_dir / "checkpoint_latest.pth").exists() else []
        return ["nnUNetv2_train", str(dataset_id), "3d_fullres", str(fold), "-tr", trainer, "-p", plans,
                "-device", self.device, *resume]

    def test(self, dataset_id: int, name: str, plans: str, trainer: str, fold: int, raw: Path, pred: Path,
             prefix: str = "") -> None:
        """Predict ``raw``/imagesTs with one trained fold (stock nnUNetv2_predict, no mirroring) into ``pred`` and
        evaluate it against ``raw``/labelsTs (``raw``: the study's raw dataset, or another one with the same
        labels); skipped where ``pred``/summary.json exists. ``prefix`` starts the steps' log names."""
        if (pred / "summary.json").exists():
            return
        d, tag = str(dataset_id), self._run(name, plans, trainer, fold)[1]
        self.step(f"{prefix}predict_{d}_{tag}", ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred),
                                                 "-d", d, "-c", "3d_fullres", "-tr", trainer, "-p", plans,
                                                 "-f", str(fold), "-device", self.device, "-npp", "1", "-nps", "1",
                                                 "--disable_tta"])
        self.evaluate(f"{prefix}evaluate_{d}_{tag}", name, plans, raw / "labelsTs", pred)

    def train_and_test(self, dataset_id: int, name: str, plans: str, trainer: str, fold: int) -> dict:
        """Train one fold (stock nnUNetv2_train), predict the test cases, evaluate them; the Dice of each
        deep-supervision output on the fold's validation cases and on its training cases."""
        raw = self.folders(name)[0]
        d = str(dataset_id)
        fold_dir, tag, pred = self._run(name, plans, trainer, fold)
        if not fold_dir.exists() and (recorded := self.result(name, plans, trainer, fold)):
            return recorded   # the ledger's record: finished where its folders are gone, not trained again
        if not (fold_dir / "validation" / "summary.json").exists():
            self._check_precision()
            self.step(f"train_{d}_{tag}", self.train_command(dataset_id, name, plans, trainer, fold), self.train_env)
        self.test(dataset_id, name, plans, trainer, fold, raw, pred)
        for step, cases, out in (("deep_supervision_dice", "val", DEEP_SUPERVISION_JSON),
                                 ("training_dice", "train", TRAINING_DICE_JSON)):
            if not (pred / out).exists():
                self.step(f"{step}_{d}_{tag}", ["nnunet_lean", "deep-supervision-dice", str(fold_dir),
                                                "--cases", cases, "-device", self.device, "-o", str(pred / out)])
        return self.result(name, plans, trainer, fold)
