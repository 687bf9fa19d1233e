"""Pruning trainers through the stock CLI on CPU: train two folds that end at different widths,
predict them together, ensemble, evaluate; resume a killed run; retrain pruned widths from scratch.

All on dataset 501's nnUNetPlans at a quarter of its widths (PRUNE_PLANS: 8..64), tiny schedules from tests/ext_trainers:
4 epochs x 25 iterations, 6 channels pruned at the start of epochs 1 and 2.
"""
import json
import shutil

import pytest
import torch

from nnunet_lean.pruning.state import CHECKPOINT_KEY, LEGACY_SUFFIX

from conftest import (HIPPO_ID, ONE_CORE, PRUNE_PLANS, STAMP, fold_dir, labels_of, load_json, per_label_dice,
                      side_by_side)
from test_end_to_end import MIN_DICE, deep_supervision_dice, predict, test_dice

PLANS = PRUNE_PLANS
WIDEST = "nnUNetTrainerPruneRandomWidestResume"
CRASH = "nnUNetTrainerPruneRandomWidestResumeCrash"
STAMP_SHORT = "nnUNetTrainerSTAMPShort"   # STAMPTiny's two pruning steps in 15 training steps


def train(nnunet, trainer, fold, *extra, check=True, env=None):
    args = ["nnUNetv2_train", str(HIPPO_ID), "3d_fullres", str(fold), "-tr", trainer, "-p", PLANS,
            "-device", "cpu", "--npz", *extra]
    return nnunet.run(args, ext_trainers=True, training=True, check=check, extra_env=env)


def unit_widths(nnunet, trainer, fold):
    ckpt = torch.load(fold_dir(nnunet, trainer, PLANS, "3d_fullres", fold) / "checkpoint_final.pth",
                      map_location="cpu", weights_only=False)["network_weights"]
    return {k: v.shape[0] for k, v in ckpt.items() if k.endswith(".conv.weight") and ".all_modules" not in k
            and not k.startswith("decoder.encoder.")}


@pytest.fixture(scope="module")
def widest(hippo):
    """An uninterrupted random@widest run (fold 0): resume reference and second model to ensemble. Beside it, one
    core each, the CRASH trainer's fold 0 killed after 3 epochs (one pruning step, then a plain epoch): its process."""
    _, crashed = side_by_side(
        lambda: train(hippo, WIDEST, 0, env=ONE_CORE),
        lambda: train(hippo, CRASH, 0, check=False, env={**ONE_CORE, "NNUNET_LEAN_TEST_CRASH_AT": "3"}))
    return crashed


def test_stamp_prunes_the_widest_layers_and_logs_each_step(stamp):
    folder = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0)
    history = load_json(folder / "pruning_history.json")
    assert history["strategy"] == "stamp" and [s["epoch"] for s in history["steps"]] == [1, 2]
    total = sum(history["initial_widths"].values())
    assert [s["channels_left"] for s in history["steps"]] == [total - 6, total - 12]
    assert history["steps"][1]["params"] < history["steps"][0]["params"] < history["initial_params"]
    # layer-normalised ranking prefers the 64-wide bottleneck (36 % of all channels) over the rest,
    # though a near-dead channel elsewhere may go first
    picks = [n for s in history["steps"] for n, _ in s["picks"]]
    assert sum(n.startswith("enc3.") for n in picks) >= 0.5 * len(picks), picks
    assert 0 < max(history["dropout"].values()) <= 0.1 + 1e-9
    # the head refit (default "all"): every step tried every head on the step's fresh training batches
    refits = [s["head_refits"] for s in history["steps"]]
    assert all(sorted(r) == [f"decoder.seg_layers.{i}" for i in range(3)] for r in refits), refits
    for h in (h for r in refits for h in r.values()):   # a refit replaced a head only where it read 0.01 better
        cut = h["dice_cut"] or 0.0   # None: no foreground in the step's sample
        assert h["refit"] == (h["dice_refit"] is not None and h["dice_refit"] > cut + 0.01), refits
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert log.count("(start of epoch") == 2 and "channels left" in log and "pseudo-Dice" in log
    assert log.count(", head decoder.seg_layers.") == 6   # the refit's line per step and head
    # the checkpoint itself is a plain nnU-Net one, at the pruned widths
    ckpt = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert set(ckpt) >= {"network_weights", "optimizer_state", "init_args", "trainer_name"}


def test_the_pruning_plot_is_written_and_not_blank(stamp):
    import matplotlib.image
    png = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0) / "pruning.png"
    img = matplotlib.image.imread(str(png))
    assert png.stat().st_size > 10_000 and img.shape[0] > 300 and img[..., :3].std() > 0.05
    # the CLI renders the same figure from any finished fold
    out = png.parent / "again.png"
    stamp.run(["nnunet_lean", "plot-pruning", str(png.parent), "-o", str(out)])
    assert out.stat().st_size > 10_000


def test_folds_pruned_to_different_widths_predict_together(stamp, stamp_predicted, tmp_path):
    """(nnUNetv2_ensemble of pruned runs: find_best_configuration over the pruning trainers, below, ensembles them.)"""
    assert unit_widths(stamp, STAMP, 0) != unit_widths(stamp, STAMP, 1)
    both = tmp_path / "folds01"   # stock nnUNetv2_predict -f 0 1 (the shared fixture), evaluated here
    shutil.copytree(stamp_predicted, both)
    assert test_dice(stamp, both) > MIN_DICE


def resume_dump(nnunet, fold, tmp_path, crash_at=None):
    """`--c` of the CRASH trainer's fold; the state its load_checkpoint restored."""
    dump = tmp_path / f"restored_{fold}.json"
    env = {"NNUNET_LEAN_TEST_DUMP": str(dump)}
    if crash_at is not None:
        env["NNUNET_LEAN_TEST_CRASH_AT"] = str(crash_at)
    proc = train(nnunet, CRASH, fold, "--c", env=env, check=crash_at is None)
    assert crash_at is None or proc.returncode == 3, proc.stderr[-3000:]
    return load_json(dump)


def assert_restored(restored, saved_state, epoch):
    assert restored["epoch"] == epoch
    assert restored["widths"] == saved_state["steps"][-1]["widths"]
    assert restored["steps"] == saved_state["steps"] and restored["rng"] == saved_state["rng"]
    assert restored["dropout"] == pytest.approx(saved_state["dropout"])


def test_resume_restores_widths_history_dropout_rng_and_optimizer(hippo, widest, tmp_path):
    # a run killed after 3 epochs (the fixture's), then `--c`
    proc = widest
    assert proc.returncode == 3, proc.stderr[-3000:]
    folder = fold_dir(hippo, CRASH, PLANS, "3d_fullres", 0)
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    saved_state = latest[CHECKPOINT_KEY]  # the pruning state travels inside the checkpoint ...
    assert len(saved_state["steps"]) == 1 and latest["current_epoch"] == 3
    assert not list(folder.glob("*" + LEGACY_SUFFIX))  # ... and nowhere else
    # copies for the self-contained and legacy-sidecar resumes below
    alone = fold_dir(hippo, CRASH, PLANS, "3d_fullres", 3)
    alone.mkdir(parents=True)
    shutil.copy(folder / "checkpoint_latest.pth", alone / "checkpoint_latest.pth")
    legacy = fold_dir(hippo, CRASH, PLANS, "3d_fullres", 4)
    legacy.mkdir(parents=True)
    old_style = {k: v for k, v in latest.items() if k != CHECKPOINT_KEY}
    torch.save(old_style, legacy / "checkpoint_latest.pth")
    (legacy / ("checkpoint_latest.pth" + LEGACY_SUFFIX)).write_text(json.dumps(saved_state))

    # the resume of fold 0 beside the two load-only resumes (of folds 3 and 4, checked at the end)
    restored, loaded = side_by_side(lambda: resume_dump(hippo, 0, tmp_path),
                                    lambda: [resume_dump(hippo, f, tmp_path, crash_at="load") for f in (3, 4)])
    assert_restored(restored, saved_state, 3)
    saved_moments = {str(i): float(s["exp_avg"].double().sum())  # the lean recipe's Adam
                     for i, s in latest["optimizer_state"]["state"].items()}
    assert restored["adam_moments"] == pytest.approx(saved_moments) and len(saved_moments) > 10
    # prune_keep_optimizer_state: Adam went on through the step at epoch 1 (3 epochs x 10 steps; fresh: 20), but
    # for the heads the step's refit replaced (weight and bias each): their moments belonged to the old weights
    # (nnU-Net gives the coarsest output no loss weight: its head, seg_layers.0, gets no gradient and no Adam state)
    refitted = [h for h, r in saved_state["steps"][0]["head_refits"].items() if r["refit"] and not h.endswith(".0")]
    adam_steps = [int(s["step"]) for s in latest["optimizer_state"]["state"].values()]
    assert set(adam_steps) <= {20, 30} and adam_steps.count(20) == 2 * len(refitted), (adam_steps, refitted)
    # ... and the run went on pruning exactly as an uninterrupted run with the same seed does
    resumed = load_json(folder / "pruning_history.json")["steps"]
    straight = load_json(fold_dir(hippo, WIDEST, PLANS, "3d_fullres", 0) / "pruning_history.json")["steps"]
    assert len(resumed) == len(straight) == 2
    assert [s["picks"] for s in resumed] == [s["picks"] for s in straight]
    probes = [s[k] for s in resumed for k in ("probe_dice_before_cut", "probe_dice_after_cut")]
    assert all(0.0 <= d <= 1.0 for d in probes), probes   # prune_probe_batches: Dice right before / after a cut

    # a checkpoint_latest.pth copied ALONE into a fresh fold folder resumes to the same state
    assert_restored(loaded[0], saved_state, 3)
    # a checkpoint written before the key existed still resumes from its sidecar
    assert_restored(loaded[1], saved_state, 3)


def test_checkpoint_best_holds_the_network_validated_in_its_epoch(stamp):
    folder = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0)
    steps = load_json(folder / "pruning_history.json")["steps"]
    saves = load_json(folder / "best_saves.json")
    first_prune = steps[0]["epoch"]
    assert any(s["epoch"] >= first_prune for s in saves), saves  # best was saved at pruned widths too
    for s in saves:
        assert s["saved"] == s["validated"], f"epoch {s['epoch']}: saved widths are not the validated ones"
    # each step forgets the best EMA: checkpoint_best holds the final widths
    best = torch.load(folder / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    assert best[CHECKPOINT_KEY]["steps"][-1]["widths"] == steps[-1]["widths"] == saves[-1]["saved"]
    assert best["current_epoch"] - 1 >= steps[-1]["epoch"]


def test_pruning_trainer_trains_and_predicts_fold_all(stamp, tmp_path):
    stamp.run(["nnUNetv2_train", str(HIPPO_ID), "2d", "all", "-tr", STAMP_SHORT, "-p", PLANS, "-device", "cpu"],
              ext_trainers=True, training=True)
    folder = fold_dir(stamp, STAMP_SHORT, PLANS, "2d", "all")
    history = load_json(folder / "pruning_history.json")
    assert len(history["steps"]) == 2 and history["steps"][-1]["channels_left"] < sum(
        history["initial_widths"].values())
    out = tmp_path / "fold_all"
    stamp.run(["nnUNetv2_predict", "-i", str(stamp.dataset_dir(HIPPO_ID, "raw") / "imagesTs"), "-o", str(out),
               "-d", str(HIPPO_ID), "-c", "2d", "-tr", STAMP_SHORT, "-p", PLANS, "-f", "all", "-device", "cpu",
               "-npp", "0", "-nps", "0"], ext_trainers=True)
    assert len(list(out.glob("*.nii.gz"))) == 2


def test_exported_pruned_folds_install_and_predict_elsewhere(stamp, stamp_predicted, tmp_path):
    archive = tmp_path / "stamp.zip"
    stamp.run(["nnUNetv2_export_model_to_zip", "-d", str(HIPPO_ID), "-o", str(archive), "-c", "3d_fullres",
               "-tr", STAMP, "-p", PLANS, "-f", "0", "1"])
    fresh = {"nnUNet_results": str(tmp_path / "fresh_results")}
    stamp.run(["nnUNetv2_install_pretrained_model_from_zip", str(archive)], extra_env=fresh)
    out = tmp_path / "installed"
    stamp.run(["nnUNetv2_predict", "-i", str(stamp.dataset_dir(HIPPO_ID, "raw") / "imagesTs"), "-o", str(out),
               "-d", str(HIPPO_ID), "-c", "3d_fullres", "-tr", STAMP, "-p", PLANS, "-f", "0", "1",
               "-device", "cpu", "-npp", "0", "-nps", "0"], ext_trainers=True, extra_env=fresh)
    dice = per_label_dice(labels_of(out), labels_of(stamp_predicted))   # the same folds, from their own results
    assert dice and min(dice.values()) >= 0.999, dice


@pytest.mark.usefixtures("widest")
def test_find_best_configuration_over_pruning_trainers(stamp):
    stamp.run(["nnUNetv2_find_best_configuration", str(HIPPO_ID), "-c", "3d_fullres", "-tr", STAMP, WIDEST,
               "-p", PLANS, "-f", "0", "-np", "1"], ext_trainers=True)
    info = load_json(stamp.dataset_dir(HIPPO_ID, "results") / "inference_information.json")
    results = info["all_results"]
    (ensemble,) = [dice for k, dice in results.items() if k.startswith("ensemble___")]
    # pruned runs of different widths average into a segmentation no worse than about the weaker one's (a
    # misaligned or garbage average scores near 0)
    members = [results[f"{t}__{PLANS}__3d_fullres"] for t in (STAMP, WIDEST)]
    assert ensemble > min(members) - 0.05 and min(members) > 0, results


def test_pretrained_weights_from_a_pruned_run_fail_clearly(stamp):
    ckpt = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0) / "checkpoint_final.pth"
    proc = train(stamp, "nnUNetTrainerTiny", 2, "-pretrained_weights", str(ckpt), check=False)
    assert proc.returncode != 0 and "does not seem to be compatible" in proc.stderr + proc.stdout


def test_pruned_widths_retrain_from_scratch_with_the_stock_trainer(stamp, tmp_path):
    folder = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0)
    stamp.run(["nnunet_lean", "pruned-plans", "-d", str(HIPPO_ID), str(folder), "-o", "nnUNetPlansPrunedF0"])
    plans = load_json(stamp.dataset_dir(HIPPO_ID) / "nnUNetPlansPrunedF0.json")
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    # the dotted path plans files of every version hold: nnU-Net resolves it with pydoc.locate
    assert arch["network_class_name"] == "nnunet_lean.pruning.network.PrunableUNet"
    assert arch["arch_kwargs"]["unit_widths"] == load_json(folder / "pruning_history.json")["steps"][-1]["widths"]
    # a stock trainer (nnU-Net's VanillaAdam, a 10-step schedule: what is built, not what is learned)
    stamp.run(["nnUNetv2_train", str(HIPPO_ID), "3d_fullres", "0", "-tr", "nnUNetTrainerShort",
               "-p", "nnUNetPlansPrunedF0", "-device", "cpu"], ext_trainers=True, training=True)
    scratch = fold_dir(stamp, "nnUNetTrainerShort", "nnUNetPlansPrunedF0", "3d_fullres", 0) / "checkpoint_final.pth"
    weights = torch.load(scratch, map_location="cpu", weights_only=False)["network_weights"]
    pruned = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in pruned.items()}
    # ... and the stock predictor rebuilds that network from the plans file
    out = predict(stamp, tmp_path / "scratch", "nnUNetTrainerShort", "nnUNetPlansPrunedF0", "3d_fullres")
    assert len(list(out.glob("*.nii.gz"))) == 2


def test_report_measures_a_pruned_fold_at_its_trained_widths(stamp, tmp_path):
    from nnunet_lean.precision import cpu_has_native_bf16
    from nnunet_lean.runs import TrainedFold, checkpoint_parameters

    folder = fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0)
    cmd = ["report", "-d", str(HIPPO_ID), "--pruned", str(folder), "--step-repeats", "1", "--predict-repeats", "1"]
    refused = tmp_path / "refused"
    bf16 = cpu_has_native_bf16()   # the studies' training precision on this CPU (docs/learning.md)
    argvs = [[*cmd, "-o", str(refused / "r")],   # -p defaults to nnUNetPlans, which a pruned fold's weights don't fit
             *([] if bf16 else [[*cmd, "-p", PLANS, "--cpu-bf16", "-o", str(refused / "r")]]),   # no native bf16
             [*cmd, "-p", PLANS, *(["--cpu-bf16"] if bf16 else []), "-o", str(tmp_path / "r")]]
    (rc, stderr, _), *more = stamp.cli_batch(argvs, ext_trainers=True)
    err = stderr.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"measure it with -p {PLANS} -c 3d_fullres" in err[0], stderr
    if not bf16:   # refused in one line; then measured in fp32
        (rc, stderr, _), *more = more
        assert rc == 2 and "no native bf16" in stderr, stderr
    assert [rc for rc, _, _ in more] == [0] and not refused.exists()   # the refusals wrote nothing
    data = load_json(tmp_path / "r.json")
    assert data["meta"]["train_step_precision"] == ("bf16 autocast" if bf16 else "fp32")
    assert f"training steps in {data['meta']['train_step_precision']}," in (tmp_path / "r.md").read_text()
    default, pruned = data["results"]
    assert pruned["parameters"] == checkpoint_parameters(TrainedFold.open(folder).load("checkpoint_final.pth"))
    assert pruned["parameters"] < default["parameters"]


def test_deep_supervision_dice_of_a_pruned_fold(stamp):
    rows = deep_supervision_dice(stamp, fold_dir(stamp, STAMP, PLANS, "3d_fullres", 0))
    assert rows[0][0] == "full" and all(0 <= d <= 1 for _, d in rows) and len(rows) > 1
