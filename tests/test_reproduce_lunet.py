"""The study script's per-run table: runs grouped by variant, folds in order, outputs full resolution first."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_lunet.py"


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_lunet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_per_run_rows_group_by_variant_and_list_every_output():
    runs = [{"variant": "LUnet Nf=8", "fold": 1, "parameters": 39088, "dice": 0.963,
             "validation_dice_per_output": [0.97, 0.85, 0.68, 0.06]},
            {"variant": "Unet 50 %", "fold": 0, "parameters": 88872, "dice": 0.0,
             "validation_dice_per_output": [0.0, 0.796, 0.649]},
            {"variant": "LUnet Nf=8", "fold": 0, "parameters": 39088, "dice": 0.975,
             "validation_dice_per_output": None}]
    script = _script()
    rows = script.per_run_rows(script.by_variant(runs))
    assert [(r["variant"], r["fold"]) for r in rows] == [("LUnet Nf=8", 0), ("LUnet Nf=8", 1), ("Unet 50 %", 0)]
    col = "validation Dice full / 1/2 / 1/4 / ..."
    assert [r[col] for r in rows] == ["-", "0.970 / 0.850 / 0.680 / 0.060", "0.000 / 0.796 / 0.649"]
    assert rows[2]["parameters"] == "88,872" and rows[2]["test Dice"] == "0.000"
    assert {r["units' widths after pruning, min-max"] for r in rows} == {"-"}


def test_pruned_widths_come_from_the_last_step_of_the_runs_history():
    script = _script()
    history = {"steps": [{"widths": {"enc0.0": 3, "enc4.1": 40}}, {"widths": {"enc0.0": 2, "enc4.1": 6, "dec3.0": 5}}]}
    assert script.pruned_widths(script.pruning_steps({"pruning_history": history})[1]) == "2-6"
    assert script.pruned_widths(script.pruning_steps({"pruning_history": None})[1]) == "-"
    assert script.pruning_steps({"transcribed": True}) is None


def test_widest_picks_replays_the_picks_against_the_widths_of_that_moment():
    script = _script()
    # a=4, b=2: a is the widest (4 of 6 channels), at a=3 again (3 of 5); then a=2, b=2 tie: b is widest (4 of 4)
    history = {"initial_widths": {"a": 4, "b": 2}, "steps": [{"picks": [["a", 0], ["a", 3]]}, {"picks": [["b", 1]]}]}
    uniform = (4 / 6 + 3 / 5 + 4 / 4) / 3
    assert script.widest_picks(*script.pruning_steps({"pruning_history": history})) == f"1.00 ({uniform:.2f})"
    history = {"initial_widths": {"a": 4, "b": 2}, "steps": [{"picks": [["b", 0]]}]}
    assert script.widest_picks(*script.pruning_steps({"pruning_history": history})) == "0.00 (0.67)"
    assert script.widest_picks(*script.pruning_steps({"pruning_history": None})) == "-"


def test_head_refits_count_replaced_weighted_heads_and_find_the_worst_cut():
    script = _script()
    cut = lambda d, r, kept: {"dice_cut": d, "dice_refit": r, "refit": kept}
    # seg_layers.2 is full resolution, .1 half, .0 the weightless coarsest (its 0.0 must not be the worst cut)
    widths = {"dec0.1": 4, "dec1.1": 4, "dec2.1": 4}
    history = {"steps": [
        {"step": 1, "widths": widths, "head_refits": {"decoder.seg_layers.0": cut(0.0, 0.3, True),
                                                      "decoder.seg_layers.1": cut(0.9, 0.91, False),
                                                      "decoder.seg_layers.2": cut(0.95, 0.97, True)}},
        {"step": 2, "widths": widths, "head_refits": {"decoder.seg_layers.0": cut(0.0, 0.3, True),
                                                      "decoder.seg_layers.1": cut(0.05, 0.8, True),
                                                      "decoder.seg_layers.2": cut(None, None, False)}}]}
    steps = script.pruning_steps({"pruning_history": history})[1]
    assert script.head_refits(steps) == "1 / 1 of 2; 0.050 -> 0.800 (1/2, step 2)"
    assert script.head_refits([{"step": 1, "widths": {}}]) == "-"          # a run before the refit existed
    # under "cut" a step lists only the heads whose input lost channels: the widths say how many heads there are
    cut_only = [{"step": 4, "widths": widths,
                 "head_refits": {"decoder.seg_layers.1": cut(0.2, 0.7, True)}}]
    assert script.head_refits(cut_only) == "0 / 1 of 1; 0.200 -> 0.700 (1/2, step 4)"
    assert script.head_refits([]) == "-"


def test_goals_count_stuck_runs_and_stuck_outputs_that_carry_loss_weight():
    runs = [{"variant": "Unet 75 %", "fold": 1, "dice": 0.0, "validation_dice_per_output": [0.0, 0.8, 0.04, 0.0]},
            {"variant": "LUnet Nf=4", "fold": 1, "dice": 0.94, "validation_dice_per_output": [0.95, 0.03, 0.6, 0.0]},
            {"variant": "STAMP", "fold": 0, "dice": 0.049, "validation_dice_per_output": None}]
    text = _script().goals(runs)
    # the coarsest output carries no loss weight: its 0.0 counts nowhere
    assert text.startswith("Runs with full-resolution test Dice < 0.05: 2 of 3 (Unet 75 % f1, STAMP f0)")
    assert text.endswith("(of 2 runs): full 1 / 1/2 1 / 1/4 1.")
    assert [t for _, _, t in _script().runs_of_fold(0, "nnunet")][-1] == "nnUNetTrainerBudgetSGD"


def test_bf16_is_part_of_the_budget_and_has_its_own_folder():
    from types import SimpleNamespace
    script = _script()
    base = dict(epochs=30, iters=50, size=64, num_train=40, num_test=10, recipe="lean", workdir=None)
    work, budget = script.study_settings(SimpleNamespace(**base, precision="fp32"))
    assert work.endswith("/repro") and "precision" not in budget   # an fp32 study resumes as it began
    work16, budget16 = script.study_settings(SimpleNamespace(**base, precision="bf16"))
    assert work16.endswith("/repro_bf16") and budget16 == dict(budget, precision="bf16")
    assert script.study_settings(SimpleNamespace(**dict(base, workdir="/x"), precision="bf16"))[0] == "/x"
    sgd = SimpleNamespace(**dict(base, recipe="nnunet"), precision="fp32")   # budgets differ: never one folder
    assert script.study_settings(sgd)[0].endswith("/repro_sgd")
    from nnunet_lean.study import training_steps_text
    assert training_steps_text("bf16", "cpu") == "training steps in bf16 on the CPU"
    assert training_steps_text("bf16", "cuda") == "training steps under nnU-Net's fp16 autocast on cuda"


def test_a_run_recorded_with_its_history_needs_no_folder_and_a_transcribed_one_says_what_it_lacks():
    script = _script()
    history = {"initial_widths": {"a": 4, "b": 2}, "steps": [{"widths": {"a": 3, "b": 2}, "picks": [["a", 0]]}]}
    recorded = {"variant": "STAMP", "fold": 0, "parameters": 17324, "dice": 0.957, "fold_dir": "/gone/fold_0",
                "first_learning_epoch": 2, "pruning_history": history,
                "validation_dice_per_output": [0.957, 0.830, 0.674, 0.312]}
    transcribed = {"variant": "STAMP", "fold": 1, "parameters": 19232, "dice": 0.961, "fold_dir": "/gone/fold_1",
                   "transcribed": "docs/study.md", "validation_dice_per_output": [0.964, 0.850, 0.697, None]}
    plain = {"variant": "LUnet Nf=4", "fold": 1, "parameters": 9964, "dice": 0.976, "fold_dir": "/gone/fold_1",
             "transcribed": "docs/study.md", "pruning_history": None, "validation_dice_per_output": [0.976]}
    rows = script.per_run_rows(script.by_variant([transcribed, recorded, plain]))
    widths, picks = "units' widths after pruning, min-max", "picks from a widest unit (uniform)"
    assert [(r["fold"], r[widths], r[picks]) for r in rows] == [(0, "2-3", "1.00 (0.67)"), (1, "n/r", "n/r"),
                                                                 (1, "-", "-")]
    assert rows[1]["validation Dice full / 1/2 / 1/4 / ..."] == "0.964 / 0.850 / 0.697 / n/r"


def test_the_summary_of_transcribed_records_says_what_they_lack_and_still_counts_the_goals(tmp_path):
    import argparse
    script = _script()
    lost = {"transcribed": "docs", "fold_dir": "/gone"}
    runs = [dict(lost, variant="Unet 25 % (linear)", fold=0, parameters=22398, dice=0.949, first_learning_epoch=4,
                 training_dice=0.952, pruning_history=None, validation_dice_per_output=[0.943, None, 0.655, None]),
            dict(lost, variant="Unet 25 % (linear)", fold=1, parameters=22398, dice=0.939, pruning_history=None,
                 training_dice=0.948, validation_dice_per_output=[0.944, 0.842, 0.03, None]),
            dict(lost, variant="STAMP", fold=0, parameters=17324, dice=0.04, validation_dice_per_output=None),
            dict(lost, variant="STAMP", fold=1, parameters=17324, dice=0.95, training_dice=0.96,
                 validation_dice_per_output=None)]
    args = argparse.Namespace(num_train=40, num_test=10, size=64, epochs=30, iters=50, recipe="lean",
                              precision="fp32", device="cpu")
    script.summarise(runs, tmp_path, args)
    md = (tmp_path / "results.md").read_text()
    assert ("| Unet 25 % (linear) | 2 | 22,398 | 0.944 | 0.939 | 0.949 | 0.949 / 0.939 | 0.950 | 0.842 | 0.943 / 0.842 / 0.030 "
            "| 4 / n/r |") in md
    assert "Runs with full-resolution test Dice < 0.05: 1 of 4 (STAMP f0)" in md
    assert "| 0.960 (1 of 2 runs) |" in md     # a median that rests on fewer runs says so
    assert "(of 2 runs): full 0 / 1/2 0 / 1/4 1." in md
    assert "0.943 / n/r / 0.655 / n/r" in md and (tmp_path / "pareto.png").stat().st_size > 1000


def test_recorded_runs_hold_every_finished_run_of_the_folds_in_the_studys_order():
    script = _script()
    finished = {("UnetNf4", "nnUNetTrainerSTAMPActivationBudget", 2), ("LUnetNf4", "nnUNetTrainerBudget", 0),
                ("UnetNf4_Scaled75", "nnUNetTrainerBudget", 2)}

    class Ledger:
        def result(self, name, plans, trainer, fold):
            return {"fold": fold, "plans": plans} if (plans, trainer, fold) in finished else None

    runs = script.recorded_runs(Ledger(), [0, 2], "lean")
    assert [(r["variant"], r["fold"]) for r in runs] == [
        ("LUnet Nf=4", 0), ("Unet 75 % (linear)", 2), ("STAMP (activation)", 2)]


def test_stamps_run_and_the_retraining_of_its_widths_train_first_and_the_tables_keep_their_order():
    script = _script()
    order = [label for label, _, _ in script.training_order(2, "lean")]
    assert order[:2] == ["STAMP", "STAMP widths, retrained from scratch"]
    assert sorted(order) == sorted(script.variant_labels()) and len(order) == 11
    assert script.variant_labels()[0] == "Unet Nf=4 (100 %)"
    assert script.training_order(2, "nnunet")[1] == ("STAMP widths, retrained from scratch", "UnetNf4_STAMPf2",
                                                     "nnUNetTrainerBudgetSGD")
