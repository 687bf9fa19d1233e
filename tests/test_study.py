"""Resumable studies: a study resumes only with the budget it began with."""
import json

import pytest

from nnunet_lean.study import Study

BUDGET = {"epochs": 30, "iters": 50, "num_train": 40}


def test_study_refuses_a_budget_other_than_the_one_it_began_with(tmp_path):
    Study(str(tmp_path), "/bin", "/trainers", BUDGET)
    assert json.loads((tmp_path / "budget.json").read_text()) == BUDGET
    study = Study(str(tmp_path), "/bin", "/trainers", dict(BUDGET))  # same budget: resumes
    assert study.train_env["NNUNET_LEAN_BUDGET_EPOCHS"] == "30" and study.train_env["NNUNET_LEAN_BUDGET_ITERS"] == "50"
    assert study.env["nnUNet_results"] == str(tmp_path / "results")
    with pytest.raises(SystemExit, match="holds a study with budget .*another --workdir"):
        Study(str(tmp_path), "/bin", "/trainers", dict(BUDGET, epochs=20))
    assert json.loads((tmp_path / "budget.json").read_text()) == BUDGET  # left as it was


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
