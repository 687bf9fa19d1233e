"""The one reader of a trained run: folder name parts, fold, which checkpoint, what it holds."""
import pytest
import torch

from nnunet_lean.errors import RunError
from nnunet_lean.pruning.state import CHECKPOINT_KEY, LEGACY_SUFFIX
from nnunet_lean.runs import TrainedFold, conv_widths, fold_folder


def test_a_fold_folder_is_read_by_its_name_parts_and_checkpoints(tmp_path):
    folder = fold_folder(tmp_path / "Dataset001_X", "nnUNetTrainerLean", "nnUNetPlans", "3d_fullres", "all")
    folder.mkdir(parents=True)
    run = TrainedFold.open(folder)
    assert (run.trainer, run.plans, run.configuration, run.fold) == ("nnUNetTrainerLean", "nnUNetPlans",
                                                                       "3d_fullres", "all")
    assert run.dataset_name == "Dataset001_X" and run.checkpoints() == []
    with pytest.raises(RunError, match="holds no checkpoint"):
        run.load()
    weights = {"encoder.stages.0.0.convs.0.conv.weight": torch.zeros(5, 1, 3, 3, 3),
               "encoder.stages.0.0.convs.0.all_modules.0.weight": torch.zeros(5, 1, 3, 3, 3),
               "decoder.encoder.stages.0.0.convs.0.conv.weight": torch.zeros(5, 1, 3, 3, 3)}
    torch.save({"network_weights": weights, CHECKPOINT_KEY: {"steps": [1]}}, folder / "checkpoint_latest.pth")
    assert run.checkpoints() == ["checkpoint_latest.pth"] and run.checkpoint_path().name == "checkpoint_latest.pth"
    assert run.widths() == {"encoder.stages.0.0.convs.0.conv": 5} == conv_widths(weights)
    assert run.pruning_state() == {"steps": [1]}
    with pytest.raises(RunError, match="has no checkpoint_final.pth: finish the training first"):
        run.weights("checkpoint_final.pth")
    (folder.parent / "fold_3").mkdir()
    assert TrainedFold.open(folder.parent / "fold_3").fold == 3


def test_a_legacy_sidecar_is_read_and_wrong_folders_are_refused(tmp_path):
    folder = tmp_path / "fold_0"
    folder.mkdir()
    torch.save({"network_weights": {}}, folder / "checkpoint_final.pth")
    (folder / ("checkpoint_final.pth" + LEGACY_SUFFIX)).write_text('{"steps": []}')
    run = TrainedFold.open(folder)
    assert run.pruning_state() == {"steps": []}
    with pytest.raises(RunError, match="not inside a TRAINER__PLANS__CONFIGURATION folder"):
        run.trainer
    with pytest.raises(RunError, match="not a fold folder"):
        TrainedFold.open(tmp_path)
    with pytest.raises(RunError, match="does not exist"):
        TrainedFold.open(tmp_path / "fold_9")
    with pytest.raises(RunError, match="no pruning_history.json"):
        run.pruning_history()


def test_per_case_dice_of_an_evaluated_folder_follows_the_reference_files_and_maps_nan_to_none(tmp_path):
    import json
    from nnunet_lean.runs import summary_dice, summary_dice_per_case
    case = lambda name, d1, d2: {"reference_file": f"/gt/{name}.nii.gz", "prediction_file": f"/p/{name}.nii.gz",
                                 "metrics": {"1": {"Dice": d1}, "2": {"Dice": d2}}}
    summary = {"foreground_mean": {"Dice": 0.7}, "mean": {"1": {"Dice": 0.8}, "2": {"Dice": 0.6}},
               "metric_per_case": [case("c_002", 0.9, float("nan")), case("c_001", 0.7, 0.6)]}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))   # json writes NaN as nnU-Net's evaluation does
    assert summary_dice_per_case(path) == {"1": [0.7, 0.9], "2": [0.6, None]}
    assert summary_dice(path) == (0.7, {"1": 0.8, "2": 0.6})
