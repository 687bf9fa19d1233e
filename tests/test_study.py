"""Resumable studies: a study resumes only with the budget it began with, and goes on where it stopped."""
import json
from pathlib import Path

import pytest

from nnunet_lean.study import Study, StudyError

BUDGET = {"epochs": 30, "iters": 50, "num_train": 40}


def test_study_refuses_a_budget_other_than_the_one_it_began_with(tmp_path):
    Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    assert json.loads((tmp_path / "budget.json").read_text()) == BUDGET
    study = Study(str(tmp_path), "/bin", "/trainers", dict(BUDGET))  # same budget: resumes
    assert study.train_env["NNUNET_LEAN_BUDGET_EPOCHS"] == "30" and study.train_env["NNUNET_LEAN_BUDGET_ITERS"] == "50"
    assert study.env["nnUNet_results"] == str(tmp_path / "results")
    with pytest.raises(StudyError, match="holds a study with budget .*another --workdir"):
        Study(str(tmp_path), "/bin", "/trainers", dict(BUDGET, epochs=20))
    assert json.loads((tmp_path / "budget.json").read_text()) == BUDGET  # left as it was


def test_a_study_keeps_the_users_folders_out_and_gpu_training_gets_nnunets_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", "/users/own/results")
    monkeypatch.setenv("nnUNet_compile", "f")
    monkeypatch.setenv("nnUNet_n_proc_DA", "7")
    cpu = Study(str(tmp_path / "cpu"), "/bin", "/trainers", BUDGET)
    gpu = Study(str(tmp_path / "gpu"), "/bin", "/trainers", BUDGET, device="cuda")
    for study in (cpu, gpu):
        assert study.env["nnUNet_results"] == str(study.work / "results")
        assert study.train_env["nnUNet_compile"] == "f"  # how to run passes through
    assert cpu.train_env["nnUNet_n_proc_DA"] == "0"  # 2-core CPU: augmentation in the training process
    assert "nnUNet_n_proc_DA" not in gpu.train_env  # a GPU gets nnU-Net's own worker count


def test_opening_only_an_existing_study_creates_nothing(tmp_path):
    work = tmp_path / "none"
    with pytest.raises(StudyError, match="no study in .*without --summary-only first"):
        Study(str(work), "/bin", "/trainers", BUDGET, create=False)
    assert not work.exists()
    Study(str(work), "/bin", "/trainers", BUDGET)
    assert Study(str(work), "/bin", "/trainers", BUDGET, create=False).work == work


def test_a_bf16_study_on_a_cpu_without_native_bf16_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """Its trainer would refuse too, but only after the study had made and preprocessed its data."""
    import nnunet_lean.precision
    monkeypatch.setattr(nnunet_lean.precision, "cpu_has_native_bf16", lambda: False)
    bf16 = dict(BUDGET, precision="bf16")
    with pytest.raises(nnunet_lean.precision.PrecisionError, match="no native bf16.*--device cuda.*--precision fp32"):
        Study(str(tmp_path / "new"), "/bin", "/trainers", bf16)
    assert not (tmp_path / "new").exists()
    Study(str(tmp_path / "gpu"), "/bin", "/trainers", bf16, device="cuda")   # nnU-Net's fp16 there
    Study(str(tmp_path / "fp32"), "/bin", "/trainers", BUDGET)
    # begun where bf16 ran: opened to read or predict it goes, a run left to train is refused before its step
    monkeypatch.setattr(nnunet_lean.precision, "cpu_has_native_bf16", lambda: True)
    Study(str(tmp_path / "begun"), "/bin", "/trainers", bf16)
    monkeypatch.setattr(nnunet_lean.precision, "cpu_has_native_bf16", lambda: False)
    study = Study(str(tmp_path / "begun"), "/bin", "/trainers", bf16, create=False)
    (study.folders("Dataset980_X")[0]).mkdir(parents=True)
    with pytest.raises(nnunet_lean.precision.PrecisionError, match="no native bf16"):
        study.train_and_test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0)
    assert not (tmp_path / "begun" / "results").exists() and not list((tmp_path / "begun").rglob("*.log"))


def test_an_unfinished_run_has_no_result(tmp_path):
    study = Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    assert study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0) is None
    fold_dir = tmp_path / "results" / "Dataset980_X" / "nnUNetTrainerBudget__UnetNf4__3d_fullres" / "fold_0"
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint_final.pth").write_bytes(b"")  # trained, not yet predicted
    assert study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0) is None


def test_an_interrupted_run_is_continued_not_restarted(tmp_path):
    study = Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    cmd = study.train_command(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1)
    assert cmd[:4] == ["nnUNetv2_train", "980", "3d_fullres", "1"] and "--c" not in cmd
    fold_dir = tmp_path / "results" / "Dataset980_X" / "nnUNetTrainerBudget__UnetNf4__3d_fullres" / "fold_1"
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint_latest.pth").write_bytes(b"")
    assert study.train_command(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1)[-1] == "--c"


def test_a_finished_run_reports_parameters_dice_and_when_it_began_to_learn(tmp_path):
    import torch
    study = Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    fold_dir = tmp_path / "results" / "Dataset980_X" / "nnUNetTrainerBudget__UnetNf4__3d_fullres" / "fold_2"
    fold_dir.mkdir(parents=True)
    log = {"epoch_start_timestamps": [0.0, 1.0, 2.0], "epoch_end_timestamps": [1.0, 2.0, 3.5],
           "mean_fg_dice": [0.0, 0.01, 0.4], "ema_fg_dice": [0.0, 0.001, 0.04]}
    torch.save({"network_weights": {"w": torch.zeros(3, 2), "norm.running_mean": torch.zeros(2)},
                "logging": log}, fold_dir / "checkpoint_final.pth")
    pred = tmp_path / "predictions" / "Dataset980_X" / "nnUNetTrainerBudget_UnetNf4_f2"
    pred.mkdir(parents=True)
    cases = [{"reference_file": "/t/X_011.nii.gz", "metrics": {"1": {"Dice": 0.96}, "2": {"Dice": float("nan")}}},
             {"reference_file": "/t/X_010.nii.gz", "metrics": {"1": {"Dice": 0.94}, "2": {"Dice": 0.65}}}]
    (pred / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.8},
                                                   "mean": {"1": {"Dice": 0.95}, "2": {"Dice": 0.65}},
                                                   "metric_per_case": cases}))
    r = study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)
    assert (r["parameters"], r["dice"], r["median_epoch_s"], r["first_learning_epoch"]) == (6, 0.8, 1.0, 2)
    assert list(r["dice_per_label"].items()) == [("1", 0.95), ("2", 0.65)]
    # per case in the reference files' order (what paired gaps between runs need), None where nnU-Net wrote NaN
    assert r["dice_per_case"] == {"1": [0.94, 0.96], "2": [0.65, None]}
    log["mean_fg_dice"] = [0.0, 0.0, 0.0]
    torch.save({"network_weights": {"w": torch.zeros(3, 2)}, "logging": log}, fold_dir / "checkpoint_final.pth")
    assert study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)["first_learning_epoch"] is None
    assert study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)["validation_dice_per_output"] is None
    outputs = [{"factor": [1, 1, 1], "dice": 0.0}, {"factor": [2, 2, 2], "dice": 0.79}]
    (pred / "deep_supervision_dice.json").write_text(json.dumps([{"fold_dir": str(fold_dir), "outputs": outputs}]))
    assert study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)["validation_dice_per_output"] == [0.0, 0.79]
    r = study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)
    assert (r["training_dice"], r["training_dice_per_label"]) == (None, None)
    # the training cases' Dice is the full-resolution output's (the first), not the validation file's
    outputs = [{"factor": [1, 1, 1], "dice": 0.9, "dice_per_label": {"1": 0.95, "2": 0.85}},
               {"factor": [2, 2, 2], "dice": 0.5, "dice_per_label": {"1": 0.5, "2": 0.5}}]
    (pred / "training_dice.json").write_text(json.dumps([{"fold_dir": str(fold_dir), "cases": "train",
                                                          "outputs": outputs}]))
    r = study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)
    assert (r["training_dice"], r["training_dice_per_label"]) == (0.9, {"1": 0.95, "2": 0.85})
    assert r["validation_dice_per_output"] == [0.0, 0.79]


def test_a_run_cut_off_in_its_final_validation_is_validated_and_cut_off_preprocessing_is_redone(tmp_path):
    study = Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    steps = []
    study.step = lambda name, cmd, env=None: steps.append(cmd)
    study.result = lambda *a: {}
    raw, pre, results = study.folders("Dataset980_X")
    (raw / "labelsTr").mkdir(parents=True)
    (raw / "dataset.json").write_text("{}")
    for i in range(3):
        (raw / "labelsTr" / f"X_{i:03d}.nii.gz").write_bytes(b"")
    (pre / "nnUNetPlans_3d_fullres").mkdir(parents=True)  # preprocessing began; the labels were not copied yet
    (pre / "gt_segmentations").mkdir()
    (pre / "gt_segmentations" / "X_000.nii.gz").write_bytes(b"")
    study.prepare(980, "Dataset980_X", [])
    assert [c[0] for c in steps] == ["nnUNetv2_plan_and_preprocess"]
    for i in range(1, 3):
        (pre / "gt_segmentations" / f"X_{i:03d}.nii.gz").write_bytes(b"")
    steps.clear()
    study.prepare(980, "Dataset980_X", [])
    assert steps == []
    # training ended (final checkpoint, no latest) but nnU-Net's final validation did not: --val, not a retrain
    fold_dir = results / "nnUNetTrainerBudget__UnetNf4__3d_fullres" / "fold_1"
    fold_dir.mkdir(parents=True)
    (fold_dir / "checkpoint_final.pth").write_bytes(b"")
    study.train_and_test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1)
    assert steps[0][0] == "nnUNetv2_train" and steps[0][-1] == "--val" and "--c" not in steps[0]
    # each output's Dice on the validation cases and on the training cases, each into its own file
    dice_steps = [c for c in steps if c[:2] == ["nnunet_lean", "deep-supervision-dice"]]
    assert [(c[c.index("--cases") + 1], Path(c[c.index("-o") + 1]).name) for c in dice_steps] == \
        [("val", "deep_supervision_dice.json"), ("train", "training_dice.json")]
    (fold_dir / "validation").mkdir()
    (fold_dir / "validation" / "summary.json").write_text("{}")
    steps.clear()
    study.train_and_test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1)
    assert "nnUNetv2_train" not in [c[0] for c in steps]


def test_a_trained_run_tests_on_another_raw_dataset_with_its_own_fold_and_the_studys_plans(tmp_path):
    study = Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    steps = []
    study.step = lambda name, cmd, env=None: steps.append((name, cmd))
    other, pred = tmp_path / "heldout" / "raw" / "Dataset980_X", tmp_path / "heldout" / "pred"
    study.test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2, other, pred, prefix="heldout_")
    (name, predict), (ename, evaluate) = steps
    assert (name, ename) == ("heldout_predict_980_nnUNetTrainerBudget_UnetNf4_f2",
                             "heldout_evaluate_980_nnUNetTrainerBudget_UnetNf4_f2")
    assert predict[predict.index("-i") + 1] == str(other / "imagesTs") and predict[predict.index("-f") + 1] == "2"
    assert predict[predict.index("-o") + 1] == str(pred) and "--disable_tta" in predict
    assert evaluate[1:3] == [str(other / "labelsTs"), str(pred)]
    assert evaluate[evaluate.index("-pfile") + 1] == str(study.folders("Dataset980_X")[1] / "UnetNf4.json")
    pred.mkdir(parents=True)
    (pred / "summary.json").write_text("{}")
    steps.clear()
    study.test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2, other, pred)
    assert steps == []


def _finished_run(work: Path, fold: int, dice: float = 0.8) -> Path:
    """A finished run of Dataset980_X under ``work``: final checkpoint, test summary, both Dice files."""
    import torch
    fold_dir = work / "results" / "Dataset980_X" / "nnUNetTrainerBudget__UnetNf4__3d_fullres" / f"fold_{fold}"
    fold_dir.mkdir(parents=True)
    log = {"epoch_start_timestamps": [0.0, 1.0], "epoch_end_timestamps": [1.0, 2.0], "mean_fg_dice": [0.0, 0.4],
           "ema_fg_dice": [0.0, 0.04]}
    torch.save({"network_weights": {"w": torch.zeros(3, 2)}, "logging": log}, fold_dir / "checkpoint_final.pth")
    pred = work / "predictions" / "Dataset980_X" / f"nnUNetTrainerBudget_UnetNf4_f{fold}"
    pred.mkdir(parents=True)
    (pred / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": dice}, "mean": {"1": {"Dice": dice}},
                                                   "metric_per_case": []}))
    outputs = [{"factor": [1, 1, 1], "dice": 0.9, "dice_per_label": {"1": 0.9}}]
    for name in ("deep_supervision_dice.json", "training_dice.json"):
        (pred / name).write_text(json.dumps([{"fold_dir": str(fold_dir), "outputs": outputs}]))
    return fold_dir


def test_a_ledger_keeps_finished_runs_when_their_folders_are_gone(tmp_path):
    import shutil
    ledger = tmp_path / "committed" / "study.json"
    study = Study(str(tmp_path / "work"), "/bin", "/trainers", BUDGET, ledger=str(ledger))
    fold_dir = _finished_run(study.work, 0)
    r = study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0)
    assert (r["dice"], r["parameters"], r["pruning_history"]) == (0.8, 6, None)
    assert (r["curve"]["hours"], r["curve"]["dice"]) == ([1 / 3600, 2 / 3600], [0.0, 0.04])   # for dice-vs-time
    recorded = json.loads(ledger.read_text())
    assert recorded["budget"] == BUDGET
    assert recorded["runs"] == {"Dataset980_X/nnUNetTrainerBudget__UnetNf4__3d_fullres/fold_0": r}
    (fold_dir / "pruning_history.json").write_text(json.dumps({"steps": [{"widths": {"enc0.0": 2}}]}))
    r = study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0)   # a pruning run records its history
    assert json.loads(ledger.read_text())["runs"]["Dataset980_X/nnUNetTrainerBudget__UnetNf4__3d_fullres/fold_0"][
        "pruning_history"] == {"steps": [{"widths": {"enc0.0": 2}}]}
    shutil.rmtree(tmp_path / "work")   # another machine: the study's folders are gone, the ledger was committed
    with pytest.raises(StudyError, match="no study in"):
        Study(str(tmp_path / "work"), "/bin", "/trainers", BUDGET, create=False)   # no ledger: nothing to open
    again = Study(str(tmp_path / "work"), "/bin", "/trainers", BUDGET, create=False, ledger=str(ledger))
    assert again.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0) == r
    assert again.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1) is None
    steps = []
    again.step = lambda name, cmd, env=None: steps.append(cmd)
    assert again.train_and_test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 0) == r and steps == []
    again.train_and_test(980, "Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 1)   # not recorded: trained
    assert steps[0][:4] == ["nnUNetv2_train", "980", "3d_fullres", "1"]


def test_a_ledger_of_another_budget_or_no_ledger_at_all_is_refused_and_left_as_it_was(tmp_path):
    ledger = tmp_path / "study.json"
    study = Study(str(tmp_path / "a"), "/bin", "/trainers", BUDGET, ledger=str(ledger))
    _finished_run(study.work, 2)
    study.result("Dataset980_X", "UnetNf4", "nnUNetTrainerBudget", 2)
    before = ledger.read_text()
    with pytest.raises(StudyError, match="records a study with budget .*another --ledger"):
        Study(str(tmp_path / "b"), "/bin", "/trainers", dict(BUDGET, epochs=20), ledger=str(ledger))
    assert ledger.read_text() == before and not (tmp_path / "b").exists()
    (tmp_path / "notes.json").write_text('{"runs": []}')
    with pytest.raises(StudyError, match="is not a study ledger .*another --ledger"):
        Study(str(tmp_path / "c"), "/bin", "/trainers", BUDGET, ledger=str(tmp_path / "notes.json"))
