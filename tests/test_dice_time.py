"""`nnunet_lean dice-vs-time`: EMA pseudo-Dice against summed epoch durations, from the checkpoints' logs."""
import json

import pytest
import torch

from nnunet_lean.measure import dice_time
from nnunet_lean.runs import TrainedFold

from conftest import HIPPO_ID, PRUNE_PLANS, STAMP, fold_dir


def fake_fold(root, trainer, durations, ema, checkpoint="checkpoint_final.pth", pause_after=None):
    """A fold folder whose checkpoint logs epochs of ``durations`` seconds (a 1 h pause after epoch
    ``pause_after``, as between a kill and --c) and EMA pseudo-Dice ``ema``."""
    folder = root / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    folder.mkdir(parents=True)
    start, t = [], 1000.0
    for i, d in enumerate(durations):
        start.append(t)
        t += d + (3600 if i == pause_after else 0)
    log = {"epoch_start_timestamps": start, "epoch_end_timestamps": [s + d for s, d in zip(start, durations)],
           "ema_fg_dice": ema, "mean_fg_dice": ema}
    torch.save({"logging": log, "network_weights": {}}, folder / checkpoint)
    return folder


def test_time_to_99_percent_and_dice_when_the_fastest_run_ended(tmp_path):
    default = fake_fold(tmp_path, "nnUNetTrainer", [360] * 4, [0.5, 0.8, 0.9, 1.0], pause_after=1)
    lean = fake_fold(tmp_path, "nnUNetTrainerLean", [180] * 6, [0.6, 0.9, 0.95, 0.99, 0.995, 0.996],
                     checkpoint="checkpoint_latest.pth")   # unfinished: only checkpoint_latest
    result = dice_time.compare([str(default), str(lean)])
    d, l = result["runs"]
    assert result["target_dice"] == pytest.approx(0.99)
    assert d["hours"] == pytest.approx(0.4) and l["hours"] == pytest.approx(0.3)   # the pause is not counted
    assert d["hours_to_target"] == pytest.approx(0.4) and l["hours_to_target"] == pytest.approx(0.2)
    assert l["time_ratio_to_reference"] == pytest.approx(0.5)
    assert (d["epochs_to_target"], l["epochs_to_target"]) == (4, 4) and l["epoch_ratio_to_reference"] == 1.0
    early = fake_fold(tmp_path, "nnUNetTrainerEarly", [900] * 3, [0.5, 0.99, 1.0])   # fewer epochs, slower ones
    e = dice_time.compare([str(default), str(early)])["runs"][1]
    assert e["epochs_to_target"] == 2 and e["epoch_ratio_to_reference"] == 0.5
    assert e["time_ratio_to_reference"] == pytest.approx(1.25)
    assert result["fastest_finish_hours"] == pytest.approx(0.3)
    assert d["dice_when_fastest_finished"] == 0.9 and l["dice_when_fastest_finished"] == 0.996
    # another reference: the lean run's final Dice; the default reaches 99 % of 0.996 at its end
    other = dice_time.compare([str(default)], reference=str(lean))
    assert other["runs"][0]["hours_to_target"] == pytest.approx(0.4)
    slow = fake_fold(tmp_path, "nnUNetTrainerScaled25", [600] * 2, [0.1, 0.2])
    never = dice_time.compare([str(default), str(slow)])["runs"][1]
    assert never["hours_to_target"] is None and never["time_ratio_to_reference"] is None
    assert never["epochs_to_target"] is None and never["epoch_ratio_to_reference"] is None
    assert "not reached" in dice_time.markdown(dice_time.compare([str(default), str(slow)]))
    # the same comparison from curves read earlier (a study's ledger keeps them where the folders are gone)
    curves = [dice_time.curve(TrainedFold.open(f)) for f in (default, lean)]
    assert dice_time.compare_curves(json.loads(json.dumps(curves))) == result


def test_the_log_comes_from_the_checkpoint_with_most_epochs(tmp_path):
    folder = fake_fold(tmp_path, "nnUNetTrainer", [60] * 5, [0.1, 0.2, 0.3, 0.4, 0.5], "checkpoint_latest.pth")
    log = {"epoch_start_timestamps": [0.0, 60.0], "epoch_end_timestamps": [60.0, 120.0], "ema_fg_dice": [0.1, 0.2]}
    torch.save({"logging": log}, folder / "checkpoint_best.pth")
    assert len(TrainedFold.open(folder).training_log()["ema_fg_dice"]) == 5


def test_cli_draws_real_folds_and_refuses_bad_input(stamp, tmp_path):
    f0, f1 = (fold_dir(stamp, STAMP, PRUNE_PLANS, "3d_fullres", f) for f in (0, 1))
    out = tmp_path / "curves" / "dice_time.png"
    empty = tmp_path / "T__P__3d_fullres" / "fold_0"
    empty.mkdir(parents=True)
    bad = [([str(f0), str(empty)], "holds no checkpoint: train it first"),
           ([str(f0), str(f0.parent)], "is not a fold folder"),
           ([str(f0), "-o", str(tmp_path / "x.svg")], "give a .png path")]
    # the drawing and the refusals through the CLI's main() in one process
    (rc, _, stdout), *refused = stamp.cli_batch(
        [["dice-vs-time", str(f0), str(f1), "-o", str(out)]]
        + [["dice-vs-time", *(argv if "-o" in argv else argv + ["-o", str(tmp_path / "bad.png")])]
           for argv, _ in bad])
    assert rc == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["epochs"] for r in data["runs"]] == [4, 4] and data["reference"] == str(f0)
    assert data["runs"][0]["hours_to_target"] is not None and out.stat().st_size > 10_000
    assert f"{STAMP} / {PRUNE_PLANS} / fold 1" in out.with_suffix(".md").read_text() and "fold 1" in stdout
    assert len(refused) == len(bad)
    for (argv, message), (rc, stderr, _) in zip(bad, refused):
        err = [line for line in stderr.splitlines() if line.startswith("nnunet_lean: error:")]
        assert rc == 2 and len(err) == 1 and message in err[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T__P__3d_fullres", "curves"]
