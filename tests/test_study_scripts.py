"""Goal checks of the study scripts (scripts/deploy_agreement.py, scripts/converge.py, ...) on hand-made results;
the studies' budget trainers' pause."""
import functools
import importlib.util
import json
import threading
import time
from argparse import Namespace
from pathlib import Path

from nnunet_lean.study import PAUSE_ENV, wait_while_paused

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(key, dice, agree=None):
    return {"key": key, "label": key, "test_dice_per_label": dict(zip("12", dice)),
            "agreement_per_label": dict(zip("12", agree)) if agree else None}


def test_agreement_goals_compare_bf16_with_its_own_backend_and_fp32_backends_with_torch():
    script = _script("deploy_agreement")
    rows = [_row("torch", [0.900, 0.950]), _row("openvino", [0.9002, 0.9495], [0.9995, 0.9991]),
            _row("onnxruntime", [0.900, 0.950], [1.0, 0.9985]),
            # against torch the change would be 0.15 points; against OpenVINO fp32 it is 0.13 / 0.05
            _row("openvino_bf16", [0.8989, 0.9500], [0.999, 0.999])]
    lines = script.goals(rows).splitlines()
    assert lines[0].endswith("0.99910 (goal >= 0.999): met")
    assert lines[1].endswith("0.99850 (goal >= 0.999): missed")
    assert "vs openvino fp32 0.130 points (goal <= 0.1): missed" in lines[2]
    shown = script.display(rows[3], script.fp32_of(rows[3], rows))
    assert shown["test Dice change vs fp32 (points)"] == "-0.130 / +0.050 (vs openvino)"


def _run(label, steps, val, dice):
    return {"label": label, "steps": steps, "epochs": steps // 50, "parameters": 1000, "validation_dice": val,
            "dice": sum(dice) / len(dice), "dice_per_label": dict(zip("12", dice)), "median_epoch_s": 1.0}


def test_converge_compares_each_network_at_its_last_budget_with_the_default_at_its_last(tmp_path):
    script = _script("converge")
    results = {"default": [_run("default", 2000, 0.800, [0.90, 0.70]), _run("default", 4000, 0.803, [0.91, 0.72])],
               "lean32": [_run("lean", 2000, 0.700, [0.88, 0.60]), _run("lean", 4000, 0.760, [0.905, 0.705]),
                          _run("lean", 8000, 0.764, [0.912, 0.705])]}
    assert script.converged(results["default"]) and not script.converged(results["lean32"][:2])
    results["default"][1].update(training_dice=0.95, training_dice_per_label={"1": 0.97, "2": 0.93})
    results["lean32"][2].update(training_dice=0.94, training_dice_per_label={"1": 0.975, "2": 0.905},
                                dice_per_case={"1": [0.91, 0.914], "2": [0.70, None]})
    results["default"][1].update(dice_per_case={"1": [0.90, 0.92], "2": [0.71, 0.73]})
    args = Namespace(dataset="airway", num_train=30, num_test=10, iters=50, start_epochs=40, precision="bf16",
                     device="cpu")
    script.summarise(results, tmp_path, args)
    text = (tmp_path / "results.md").read_text()
    final = text.split("against the default at its last budget")[1]
    # lean at 8,000 steps vs default at 4,000: +0.2 and -1.5 points -> not within 1 point per label
    # ... and on the training cases +0.5 / -2.5 points: the label's gap is there in fitting too
    # per case, paired: label 1 +1.0 and -0.6 points (mean +0.2, SE 0.8), label 2 only the case both have (-1.0)
    assert "| lean | 8000 | yes | 0.912, 0.705 | +0.2, -1.5 | +0.2 +- 1.6; -1.0 +- nan | no | +0.5, -2.5 |" in final
    assert "| default | 4000 | yes | 0.910, 0.720 | +0.0, +0.0 | - | - | +0.0, +0.0 |" in final
    assert "| lean | 4000 | 1,000 | 0.760 | +6.0 | no | 0.805 | 0.905, 0.705 | -0.5, -1.5 | - | 1.0 |" in text


def test_converge_neither_calls_a_network_stuck_at_background_converged_nor_rounds_parity_against_the_table():
    script = _script("converge")
    stuck = [_run("sgd", 2000, 0.000, [0.0, 0.0]), _run("sgd", 4000, 0.001, [0.0, 0.0])]
    assert not script.converged(stuck)  # moved < 0.5 points, but never learned
    # the verdict follows the printed 0.1-point gaps: -0.996 prints as "-1.0", which is within 1.0 point
    assert script.within_parity({"1": -0.00996, "2": 0.02}) and not script.within_parity({"1": -0.0105})
    assert not script.within_parity({"1": float("nan"), "2": 0.0})


def test_converge_trains_a_levels_cheapest_networks_first_and_keeps_the_rest_in_their_order():
    script = _script("converge")
    assert script.cheapest_first(["default", "default_sgd", "lean32", "lean16", "lean8"]) == [
        "lean8", "lean16", "lean32", "default", "default_sgd"]
    assert script.cheapest_first(["default_nomirror", "lean32_nomirror", "lean16_adamw", "lean32"]) == [
        "lean16_adamw", "lean32_nomirror", "lean32", "default_nomirror"]
    # --first: the named networks of the level first (a name not pending is skipped), then the cheapest
    assert script.cheapest_first(["default", "lean32", "lean16", "lean8"], ["lean32", "default_sgd"]) == [
        "lean32", "lean8", "lean16", "default"]


def test_converge_reruns_the_step_report_when_its_networks_change(tmp_path):
    script = _script("converge")
    path = tmp_path / "report.json"
    assert not script.reported(path, ["nnUNetTrainerLean"])
    rows = [{"label": "nnU-Net default (nnUNetTrainer)"}, {"label": "nnUNetTrainerLean"},
            {"label": "nnUNetTrainerLean_Nf16"}]
    path.write_text(json.dumps({"meta": {}, "results": rows}))
    assert script.reported(path, ["nnUNetTrainerLean", "nnUNetTrainerLean_Nf16"])
    assert not script.reported(path, ["nnUNetTrainerLean", "nnUNetTrainerLean_Nf16", "nnUNetTrainerLean_Nf8"])


def test_a_paused_study_holds_before_the_epoch_begins_so_the_pause_is_not_training_time(tmp_path, monkeypatch):
    bench = _script("bench_trainers/nnunet_lean_bench_trainers")

    class Logged:  # stands in for nnU-Net's on_epoch_start, which logs the epoch's start timestamp
        def on_epoch_start(self):
            self.started = time.time()

    class Trainer(bench.BudgetSchedule, Logged):
        pass

    trainer, lines = object.__new__(Trainer), []
    trainer.print_to_log_file = lines.append
    pause = tmp_path / "PAUSE"
    monkeypatch.setenv(PAUSE_ENV, str(pause))
    trainer.on_epoch_start()  # no file: no wait, nothing logged
    assert lines == []
    pause.write_text("")
    removed = []
    timer = threading.Timer(1.0, lambda: (removed.append(time.time()), pause.unlink()))
    timer.start()
    monkeypatch.setattr(bench, "wait_while_paused", functools.partial(wait_while_paused, poll_s=0.05))
    trainer.on_epoch_start()
    timer.join()
    assert trainer.started >= removed[0]  # the epoch's clock starts after the pause ends
    assert lines[0].startswith("paused: ") and lines[1].startswith("resumed after ")


def test_denormal_probe_counts_each_parameter_once_and_maps_moments_only_when_aligned():
    import torch
    probe = _script("denormal_probe")
    tiny = torch.finfo(torch.float32).tiny
    conv = torch.tensor([1.0, tiny / 4, tiny / 8, 0.5]).view(1, 1, 2, 2)   # half denormal
    norm = torch.ones(4)
    # dynamic_network_architectures registers every conv twice and the decoder holds the encoder: aliases
    weights = {"encoder.stages.3.0.convs.0.conv.weight": conv, "encoder.stages.3.0.convs.0.all_modules.0.weight": conv,
               "encoder.stages.3.0.convs.0.norm.weight": norm, "decoder.encoder.stages.3.0.convs.0.conv.weight": conv}
    state = {0: {"exp_avg": torch.full((1, 1, 2, 2), tiny / 2)}, 1: {"exp_avg": torch.zeros(4)}}
    groups = [{"params": [0, 1]}]
    [row] = probe.stages({"network_weights": weights, "optimizer_state": {"state": state, "param_groups": groups}})
    assert row["stage"] == "encoder.stages.3" and row["parameters"] == 8 and row["max |conv weight|"] == 1.0
    assert row["denormal weights"] == 2 / 8 and row["denormal Adam moments"] == 4 / 8
    # a parameter that never had a gradient has no state (nnU-Net's zero-weighted coarsest seg layer): no moments
    no_grad = {"state": {1: state[1]}, "param_groups": groups}
    [row] = probe.stages({"network_weights": weights, "optimizer_state": no_grad})
    assert row["denormal Adam moments"] == 0
    shifted = [{"params": [0, 1, 2]}]   # three parameters in the optimizer for our two (buffers in between)
    [row] = probe.stages({"network_weights": weights, "optimizer_state": {"state": state, "param_groups": shifted}})
    assert row["denormal Adam moments"] is None   # not guessed


def test_the_adamw_control_trains_with_nnunets_adamw_and_refuses_a_lean_recipe_checkpoint():
    """converge.py's *_adamw rows (the dead-stage control) must train under nnU-Net's nnUNetTrainerAdam optimizer,
    and their --c must not go on from a run of the lean recipe (coupled L2) in the same folder."""
    import torch
    from nnunet_lean import recipe
    from test_recipe import _Host   # what configure_optimizers reads of a trainer
    bench = _script("bench_trainers/nnunet_lean_bench_trainers")
    assert {k: v[2] for k, v in _script("converge").NETWORKS.items() if k.endswith("_adamw")} == dict.fromkeys(
        ["default_adamw", "lean32_adamw", "lean16_adamw"], "nnUNetTrainerBudgetAdamW")

    class Resuming(bench.nnUNetTrainerBudgetAdamW):
        def __init__(self):   # what recipe_mismatch reads, without nnU-Net's __init__
            self.optimizer = bench.nnUNetTrainerBudgetAdamW.configure_optimizers(_Host())[0]
            self.num_epochs, self.output_folder = 10, "/r/nnUNetTrainerBudgetAdamW__P__3d_fullres/fold_0"

    trainer = Resuming()
    assert type(trainer.optimizer) is torch.optim.AdamW and trainer.optimizer.defaults["amsgrad"]
    lean = bench.nnUNetTrainerBudget.configure_optimizers(_Host())[0].state_dict()
    problem = recipe.recipe_mismatch(trainer, {"optimizer_state": lean, "current_epoch": 3})
    assert problem.startswith("this checkpoint was trained with Adam, lr 0.01, but Resuming now trains with AdamW")
    own = trainer.optimizer.state_dict()
    assert recipe.recipe_mismatch(trainer, {"optimizer_state": own, "current_epoch": 3}) is None


def test_epoch_cost_times_each_network_after_its_warm_up_epoch_and_refuses_what_is_no_study(tmp_path, monkeypatch,
                                                                                          capsys):
    import sys

    import torch
    from nnunet_lean.runs import TrainedFold
    monkeypatch.syspath_prepend(str(SCRIPTS))   # the script imports converge's tables, as `python scripts/...` does
    script = _script("epoch_cost")

    def fold(name, epoch_s, steps_s):
        folder = tmp_path / "results" / f"nnUNetTrainerBudget__{name}__3d_fullres" / "fold_0"
        folder.mkdir(parents=True)
        starts = [100.0 * i for i in range(len(epoch_s))]
        torch.save({"logging": {"epoch_start_timestamps": starts,
                                "epoch_end_timestamps": [s + e for s, e in zip(starts, epoch_s)]}},
                   folder / "checkpoint_final.pth")
        lines = [f"2026-11-30 12:00:0{i}.000000: epoch phases (s): epoch {i}, train data 1.00, train steps "
                 f"{s:.2f}, val data 0.10, val steps 2.00 " for i, s in enumerate(steps_s)]
        # a run killed after epoch 2 and resumed from its checkpoint after epoch 1, the next day: epoch 2 ran
        # twice (the later time counts), and the logs' names sort wrongly as text (nnU-Net pads no month/day)
        killed = lines[:2] + [lines[2].replace(f"{steps_s[2]:.2f}", "999.00")] if len(lines) > 2 else lines
        (folder / "training_log_2026_9_30_12_00_00.txt").write_text("\n".join(killed) + "\n")
        (folder / "training_log_2026_10_1_13_00_00.txt").write_text("\n".join(lines[2:]) + "\n")
        return TrainedFold.open(folder)

    (t_def, p_def) = script.timed_epochs(fold("nnUNetPlans", [90.0, 50.0, 40.0, 60.0], [80.0, 45.0, 35.0, 55.0]))
    (t_lean, p_lean) = script.timed_epochs(fold("nnUNetLeanPlans", [70.0, 30.0, 40.0, 20.0], [60.0, 25.0, 35.0, 15.0]))
    assert t_def == [50.0, 40.0, 60.0] and [p["train steps"] for p in p_def] == [45.0, 35.0, 55.0]   # warm-up out
    args = Namespace(networks=["default", "lean32"], rounds=1, epochs=4, iters=50)
    result = script.summarise({"default": t_def, "lean32": t_lean}, {"default": p_def, "lean32": p_lean}, args,
                              tmp_path, {"precision": "bf16"})
    assert [(r["median_epoch_s"], r["ratio"], r["train steps"]) for r in result["rows"]] == [(50.0, 1.0, 45.0),
                                                                                            (30.0, 0.6, 25.0)]
    assert "| LUnet Nf=32, lean recipe | 3 | 30.0 s | 0.60 | 1.0 | 25.0 | 0.1 | 2.0 |" in script.markdown(result)

    lost = fold("nnUNetLeanNf16Plans", [70.0, 30.0], [60.0])   # a run without the phase lines is refused
    try:
        script.timed_epochs(lost)
        raise AssertionError("a run without phases was timed")
    except script.RunError as e:
        assert "2 epochs but 1 phase lines" in str(e)

    study = tmp_path / "study"
    study.mkdir()
    for budget, message in [(None, "holds no budget.json: give a converge.py level folder"),
                            ({"dataset": "airway", "precision": "bf16"}, "has no plans for default, lean32")]:
        if budget:
            (study / "budget.json").write_text(json.dumps(budget))
        monkeypatch.setattr(sys, "argv", ["epoch_cost.py", "--study", str(study), "--networks", "default", "lean32"])
        assert script.exit_on_error(script.main, "epoch_cost.py") == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert sorted(p.name for p in study.iterdir()) == ["budget.json"]   # nothing written


def test_label_confusion_counts_swapped_voxels_per_case_and_refuses_a_folder_missing_cases(tmp_path):
    import numpy as np
    import SimpleITK as sitk
    import pytest
    from nnunet_lean.errors import LeanError
    script = _script("label_confusion")
    ref, pred = tmp_path / "labelsTs", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0, :, :2], gt[0, :, 2:] = 4, 5          # 8 voxels left, 8 right
    pr = gt.copy()
    pr[0, 0, :2] = 5                           # 2 left voxels called right
    for name, (g, p) in {"a.nii.gz": (gt, pr), "b.nii.gz": (gt, gt)}.items():
        sitk.WriteImage(sitk.GetImageFromArray(g), str(ref / name))
        sitk.WriteImage(sitk.GetImageFromArray(p), str(pred / name))
    total, per_case = script.confusion(ref, pred)
    assert total[4, 5] == 2 and total[4, 4] == 14 and total[5, 5] == 16 and total[5, 4] == 0
    assert script.swapped(per_case["a.nii.gz"], 4, 5) == 2 and script.swapped(per_case["b.nii.gz"], 4, 5) == 0
    (pred / "b.nii.gz").unlink()
    with pytest.raises(LeanError, match="lacks 1 of 2 cases"):
        script.confusion(ref, pred)


def test_heldout_gaps_are_paired_per_case_differences_with_twice_their_standard_error(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))   # heldout_dice imports converge and label_confusion
    script = _script("heldout_dice")
    # paired differences +1, +2 points: mean +1.5, sd 0.71, se 0.5 (unpaired it would be +- 5.0); a case without
    # the label (None) is left out
    assert script.gap([0.91, 0.95, None], [0.90, 0.93, 0.5]) == "+1.5 +- 1.0"
    rows = [{"level": "E80", "key": k} for k in ("default", "lean32", "default_nomirror", "lean32_nomirror",
                                                  "default_sgd")]
    refs = {r["key"]: script.reference(r, rows)["key"] for r in rows}
    assert refs == {"default": "default", "lean32": "default", "default_nomirror": "default",
                    "lean32_nomirror": "default_nomirror", "default_sgd": "default"}
    import pytest
    from nnunet_lean.errors import LeanError
    for bad in (["4"], ["4,5,6"], ["-1,5"], ["4,4"], ["a,b"]):
        with pytest.raises(LeanError, match="two different labels"):
            script.parse_pairs(bad)


def test_the_left_right_control_trains_the_lean_recipe_without_mirroring():
    """converge.py's *_nomirror rows: nnU-Net's own no-mirroring augmentation under the lean recipe's optimizer."""
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import \
        nnUNetTrainerNoMirroring
    from test_recipe import _Host
    bench = _script("bench_trainers/nnunet_lean_bench_trainers")
    assert {k: v[2] for k, v in _script("converge").NETWORKS.items() if k.endswith("_nomirror")} == dict.fromkeys(
        ["default_nomirror", "lean32_nomirror"], "nnUNetTrainerBudgetNoMirroring")
    trainer = bench.nnUNetTrainerBudgetNoMirroring
    mro = trainer.__mro__
    assert mro.index(bench.nnUNetTrainerBudget) < mro.index(nnUNetTrainerNoMirroring)
    assert trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size is \
        nnUNetTrainerNoMirroring.configure_rotation_dummyDA_mirroring_and_inital_patch_size
    lean = type(bench.nnUNetTrainerBudget.configure_optimizers(_Host())[0])
    assert type(trainer.configure_optimizers(_Host())[0]) is lean


def test_a_case_is_flipped_when_more_than_half_of_a_pairs_voxels_got_the_other_label():
    import numpy as np
    script = _script("label_confusion")
    m = np.zeros((6, 6), int)
    m[4, 4], m[4, 5], m[5, 5], m[5, 4] = 3, 7, 4, 6     # 13 of 20 reference voxels swapped
    assert script.flipped(m, 4, 5) and not script.flipped(m, 1, 2) and not script.flipped(m[:4, :4], 4, 5)
    m[4, 0] = 6                  # 13 of 26: reference voxels count (rows), also those predicted as background
    assert not script.flipped(m, 4, 5)
    m[0, 4] = 50                 # background predicted as a bronchus (a column) does not count
    m[4, 0] = 5                  # 13 of 25
    assert script.flipped(m, 4, 5)


def test_pruning_probe_tables_dice_around_each_cut_and_refuses_a_folder_without_the_study(tmp_path, monkeypatch):
    import sys

    import pytest
    import torch
    from nnunet_lean.errors import LeanError
    monkeypatch.syspath_prepend(str(SCRIPTS))   # the script imports the study's settings, as `python scripts/...` does
    script = _script("pruning_probe")
    fold = tmp_path / "nnUNetTrainerSTAMPActivationProbeBudget__UnetNf4__3d_fullres" / "fold_1"
    fold.mkdir(parents=True)
    torch.save({"logging": {"epoch_start_timestamps": [0.0, 1.0, 2.0], "epoch_end_timestamps": [1.0, 2.0, 3.0],
                            "mean_fg_dice": [0.9, 0.95, 0.0]}}, fold / "checkpoint_final.pth")
    (fold / "pruning_history.json").write_text(json.dumps({"steps": [
        {"step": 1, "epoch": 1, "probe_dice_before_cut": 0.96, "probe_dice_after_cut": 0.94, "widths": {"a": 3}},
        {"step": 2, "epoch": 2, "probe_dice_before_cut": 0.95, "probe_dice_after_cut": 0.6, "widths": {"a": 2}},
        {"step": 3, "epoch": 3, "widths": {"a": 2}}]}))
    steps = script.step_rows(fold)
    assert [(s["after_cut"], s["after_epoch"], s["narrowest"]) for s in steps] == [(0.94, 0.95, 3), (0.6, 0.0, 2),
                                                                                   (None, None, 2)]
    script.summarise([{"trainer": "T", "fold": 1, "dice": 0.027, "validation_dice_per_output": [0.014, 0.0],
                       "steps": steps}], tmp_path)
    assert "| 2 (2) | 0.950 | 0.600 | 0.000 | 2 |" in (tmp_path / "probe.md").read_text()
    monkeypatch.setattr(sys, "argv", ["pruning_probe.py", "--precision", "fp32", "--workdir", str(tmp_path / "none")])
    with pytest.raises(LeanError, match=r"reproduce_lunet.py --precision fp32 --prepare-only first"):
        script.main()
    assert not (tmp_path / "none").exists()


def test_cut_probe_repairs_keep_what_they_claim_on_a_hand_made_head_input():
    """scripts/cut_probe.py's two repairs of a segmentation head: a removed channel that outputs a constant is removed
    without a trace when its mean goes into the head's bias; one that copies a kept channel is removed without a trace
    when the head is refitted; a plain cut changes the logits in both cases."""
    import copy

    import torch
    from test_pruning_surgery import make_net

    script = _script("cut_probe")
    net = make_net()
    name = "dec2.1"                # the last decoder stage: its consumer is the full-resolution head
    block = net.block(name)
    with torch.no_grad():
        block.conv.weight[1].zero_()              # channel 1: LeakyReLU(beta) everywhere after the InstanceNorm
        block.conv.bias[1], block.norm.bias[1] = 0.0, 1.5
        for p in (block.conv.weight, block.conv.bias, block.norm.weight, block.norm.bias):
            p[2] = p[0]                           # channel 2: a copy of channel 0
    net.eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        before = net(x)[0]
    _, means = script.measure(net, [x[0]])
    assert abs(means[name][1].item() - 1.5) < 1e-4
    for cut, repair in (([(name, 1)], lambda n, p: script.keep_means(n, p, means)),
                        ([(name, 2)], lambda n, p: script.refit_heads(n, p, [x[0]]))):
        plain, repaired = copy.deepcopy(net), copy.deepcopy(net)
        plain.remove_picks(cut)
        repair(repaired, cut)
        with torch.no_grad():
            assert (plain(x)[0] - before).abs().max() > 0.1
            assert (repaired(x)[0] - before).abs().max() < 1e-3, cut


def test_head_probe_reads_what_a_dead_head_no_longer_does():
    """scripts/head_probe.py's linear probe: inputs that carry the labels (a foreground detector among noise) are read
    back (Dice ~1) whatever the head does; inputs of pure noise are not."""
    import torch

    script = _script("head_probe")
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(20000, generator=g) < 0.05).long()          # 5 % foreground, as a small structure
    noise = torch.randn(20000, 3, generator=g)
    informative = torch.cat([noise, 3.0 * y[:, None].float() + 0.3 * torch.randn(20000, 1, generator=g)], 1)
    assert script.foreground_dice(torch.zeros_like(y), y) == 0.0       # a head stuck at background
    assert script.foreground_dice(script.linear_probe(informative, y, 2), y) > 0.95
    assert script.foreground_dice(script.linear_probe(noise, y, 2), y) < 0.2


def test_heldout_rows_are_recorded_in_the_ledger_and_kept_when_the_runs_folders_are_gone(monkeypatch, tmp_path):
    import sys
    import numpy as np
    import pytest
    from nnunet_lean.errors import LeanError
    monkeypatch.syspath_prepend(str(SCRIPTS))
    script = _script("heldout_dice")
    name = "Dataset995_LeanAirway48"
    root, ledger = tmp_path / "airway_fp32", tmp_path / "heldout_airway.json"
    level = root / "E160"
    (level / "raw" / name).mkdir(parents=True)
    (level / "budget.json").write_text(json.dumps({"epochs": 160, "iters": 50, "num_train": 30, "num_test": 10,
                                                   "dataset": "airway", "precision": "fp32"}))
    labels = {"background": 0, **{f"l{i}": i for i in range(1, 6)}}
    (level / "raw" / name / "dataset.json").write_text(json.dumps({"labels": labels}))
    raw = root / "heldout" / "raw" / name
    (raw / "labelsTs").mkdir(parents=True)
    (raw / "dataset.json").write_text("{}")
    for i in range(12):                                   # the study's 10 test cases and 2 new ones
        (raw / "labelsTs" / f"c{i:03d}.nii.gz").write_text("")
    fold = level / "results" / name / "nnUNetTrainerBudgetNoMirroring__nnUNetLeanPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_final.pth").write_text("")
    predicted = []

    def test(self, d, name, plans, trainer, f, raw, pred, prefix=""):   # stands in for predict + evaluate
        predicted.append(trainer)
        pred.mkdir(parents=True, exist_ok=True)
        cases = [{"reference_file": f"c{i}", "metrics": {str(k): {"Dice": 0.9} for k in range(1, 6)}} for i in range(2)]
        (pred / "summary.json").write_text(json.dumps({"metric_per_case": cases, "foreground_mean": {"Dice": 0.9},
                                                       "mean": {}}))

    m = np.zeros((6, 6), int)
    m[4, 4], m[4, 5], m[5, 5], m[5, 4] = 3, 7, 4, 6      # one case, 13 of its 20 bronchus voxels swapped
    monkeypatch.setattr(script.Study, "test", test)
    monkeypatch.setattr(script, "confusion", lambda ref, pred: (m, {"c0": m}))
    argv = ["heldout_dice.py", "--dataset", "airway", "--num-new", "2", "--precision", "fp32",
            "--workdir", str(tmp_path), "--ledger", str(ledger)]
    monkeypatch.setattr(sys, "argv", argv)
    assert script.main() == 0 and predicted == ["nnUNetTrainerBudgetNoMirroring"]
    key = f"E160/{name}/nnUNetTrainerBudgetNoMirroring__nnUNetLeanPlans__3d_fullres/fold_0"
    row = json.loads(ledger.read_text())["runs"][key]
    assert row["swapped"]["4,5"] == 13 and row["cases_flipped"]["4,5"] == 1 and row["per_case"]["4"] == [0.9, 0.9]
    import shutil
    shutil.rmtree(root / "heldout" / "predictions")
    shutil.rmtree(level / "results")                      # a wiped cache: the row comes from the ledger alone
    (root / "heldout" / "results.md").unlink()
    assert script.main() == 0 and predicted == ["nnUNetTrainerBudgetNoMirroring"]
    assert "LUnet Nf=32, lean recipe, no mirroring" in (root / "heldout" / "results.md").read_text()
    monkeypatch.setattr(sys, "argv", [*argv[:4], "3", *argv[5:]])
    shutil.rmtree(raw / "labelsTs")                       # not the count check: the ledger's own budget refuses
    with pytest.raises(LeanError, match="budget"):
        script.main()
