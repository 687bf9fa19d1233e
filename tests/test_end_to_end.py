"""Stock nnU-Net commands, end to end on CPU: plan -> train -> predict -> evaluate -> ensemble.

Trained here (fold 0, tiny schedules from tests/ext_trainers, --npz):
  A3: nnUNetTrainerLeanTiny on the STOCK nnUNetPlans, 3d_fullres   (lean trainer, stock plans)
  A2: the same in 2d                                               (second configuration)
  B : nnUNetTrainerTiny (stock network code) on LEAN_PLANS          (stock trainer, lean plans)
The lean network is LUnet Nf=16 in both (nnUNetTrainerLean_Nf16; LeanPlannerNf16's nnUNetLeanNf16Plans): half the
default width and twice as fast a step here; the planner tests check nnUNetLeanPlans itself.
"""
import pytest
import torch

from conftest import HIPPO_ID, ONE_CORE, fold_dir, labels_of, load_json, per_label_dice, side_by_side

LEAN_PLANS, NF = "nnUNetLeanNf16Plans", 16
MIN_DICE = 0.5  # all-background scores 0; the tiny trainers' 100 CPU steps reach ~0.8 here
FLUSHED = "denormals flushed to zero on the CPU (FTZ/DAZ)"


def train(nnunet, trainer, plans, config, env=None):
    nnunet.run(["nnUNetv2_train", str(HIPPO_ID), config, "0", "-tr", trainer, "-p", plans,
                "-device", "cpu", "--npz"], ext_trainers=True, training=True, extra_env=env)


@pytest.fixture(scope="module")
def trained(hippo):
    """A3 and B side by side, one core each (so the two also run the same arithmetic), then A2."""
    hippo.run(["nnUNetv2_plan_experiment", "-d", str(HIPPO_ID), "-pl", "LeanPlannerNf16"])  # its data: nnUNetPlans'
    side_by_side(lambda: train(hippo, "nnUNetTrainerLeanTiny", "nnUNetPlans", "3d_fullres", ONE_CORE),
                 lambda: train(hippo, "nnUNetTrainerTiny", LEAN_PLANS, "3d_fullres", ONE_CORE))
    train(hippo, "nnUNetTrainerLeanTiny", "nnUNetPlans", "2d")
    return hippo


def predict(nnunet, out, trainer, plans, config):
    """Stock nnUNetv2_predict, sequential (-npp 0 -nps 0: no worker processes to start, ~6 s less a call here; the
    shared stamp_predicted fixture runs the worker-pool path)."""
    images = nnunet.dataset_dir(HIPPO_ID, "raw") / "imagesTs"
    nnunet.run(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(HIPPO_ID), "-c", config,
                "-tr", trainer, "-p", plans, "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
                "--save_probabilities"], ext_trainers=True)
    return out


@pytest.fixture(scope="module")
def predicted(trained, tmp_path_factory):
    """predict() of the test cases by A3's fold 0, once per module."""
    return predict(trained, tmp_path_factory.mktemp("pred") / "A3", "nnUNetTrainerLeanTiny", "nnUNetPlans",
                   "3d_fullres")


def test_dice(nnunet, pred_folder, plans="nnUNetPlans") -> float:
    raw = nnunet.dataset_dir(HIPPO_ID, "raw")
    nnunet.run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred_folder),
                "-djfile", str(raw / "dataset.json"),
                "-pfile", str(nnunet.dataset_dir(HIPPO_ID) / f"{plans}.json"), "-np", "1"])
    summary = load_json(pred_folder / "summary.json")
    assert len(summary["metric_per_case"]) == 2
    return summary["foreground_mean"]["Dice"]


test_dice.__test__ = False  # a helper, not a test


def hidden_conv_widths(checkpoint) -> set:
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    return {w.shape[0] for k, w in weights.items()
            if k.endswith(".weight") and w.ndim >= 4 and "seg_layers" not in k and "transpconv" not in k}


def test_lean_trainer_on_stock_plans_trains_a_constant_width_net(trained):
    ckpt = fold_dir(trained, "nnUNetTrainerLeanTiny", "nnUNetPlans", "3d_fullres") / "checkpoint_final.pth"
    assert hidden_conv_widths(ckpt) == {NF}
    # set before nnU-Net's first parallel op, so every thread of the pool flushes (precision.flush_denormals)
    assert FLUSHED in next(ckpt.parent.glob("training_log_*.txt")).read_text()
    stock = load_json(trained.dataset_dir(HIPPO_ID) / "nnUNetPlans.json")
    assert len(set(stock["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"])) > 1


def test_stock_trainer_on_lean_plans_trains_a_constant_width_net(trained):
    ckpt = fold_dir(trained, "nnUNetTrainerTiny", LEAN_PLANS, "3d_fullres") / "checkpoint_final.pth"
    assert hidden_conv_widths(ckpt) == {NF}
    assert "denormals" not in next(ckpt.parent.glob("training_log_*.txt")).read_text()   # nnU-Net's own trainer


def test_lean_trainer_and_stock_vanilla_adam_on_lean_plans_train_the_same_network(trained):
    """README's advice for lean plans (-tr nnUNetTrainerVanillaAdam) is the lean recipe: seeded alike, the two
    user paths (nnUNetTrainerLean on stock plans, VanillaAdam on lean plans) end at the same weights."""
    a, b = (torch.load(fold_dir(trained, t, p, "3d_fullres") / "checkpoint_final.pth", map_location="cpu",
                       weights_only=False)["network_weights"]
            for t, p in (("nnUNetTrainerLeanTiny", "nnUNetPlans"), ("nnUNetTrainerTiny", LEAN_PLANS)))
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_predict_and_evaluate_test_cases(predicted, trained):
    """(B's fold is not predicted as well: its weights are A3's, checked above, in the network its plans build.)"""
    assert test_dice(trained, predicted) > MIN_DICE


def test_find_best_configuration_ensemble_and_2d_deployment(trained, predicted, tmp_path):
    trained.run(["nnUNetv2_find_best_configuration", str(HIPPO_ID), "-c", "2d", "3d_fullres",
                 "-tr", "nnUNetTrainerLeanTiny", "-p", "nnUNetPlans", "-f", "0", "-np", "1"], ext_trainers=True)
    info = load_json(trained.dataset_dir(HIPPO_ID, "results") / "inference_information.json")
    assert any(k.startswith("ensemble___") for k in info["all_results"])
    assert {"nnUNetTrainerLeanTiny__nnUNetPlans__2d", "nnUNetTrainerLeanTiny__nnUNetPlans__3d_fullres"} \
        <= set(info["all_results"])

    p2 = predict(trained, tmp_path / "p2d", "nnUNetTrainerLeanTiny", "nnUNetPlans", "2d")
    # deployment of the 2d fold: `nnunet_lean predict` (exported on the fly, run by OpenVINO) segments as nnU-Net
    images = trained.dataset_dir(HIPPO_ID, "raw") / "imagesTs"
    trained.run(["nnunet_lean", "predict", "-i", str(images), "-o", str(tmp_path / "ov2d"), "-d", str(HIPPO_ID),
                 "-c", "2d", "-tr", "nnUNetTrainerLeanTiny", "-p", "nnUNetPlans", "-f", "0", "--backend", "openvino",
                 "--threads", "2", "-npp", "0", "-nps", "0", "--disable_progress_bar"], ext_trainers=True)
    dice = per_label_dice(labels_of(tmp_path / "ov2d"), labels_of(p2))
    assert dice and min(dice.values()) >= 0.999, dice
    p3 = predicted
    ens = tmp_path / "ensemble"
    trained.run(["nnUNetv2_ensemble", "-i", str(p2), str(p3), "-o", str(ens), "-np", "1"])
    assert sorted(p.name for p in ens.glob("*.nii.gz")) == sorted(p.name for p in p3.glob("*.nii.gz"))
    assert test_dice(trained, ens) > MIN_DICE


def ds_rows(line: str) -> list:
    """The Dice per output of one printed `nnunet_lean deep-supervision-dice` line, full resolution first."""
    assert line.count("\n") == 0, line
    return [(scale, float(dice)) for scale, dice in (p.split(": ") for p in line.split("  ", 1)[1].split(", "))]


def deep_supervision_dice(nnunet, folder, *extra: str) -> list:
    """The Dice per output that `nnunet_lean deep-supervision-dice` prints for one fold, full resolution first."""
    return ds_rows(nnunet.run(["nnunet_lean", "deep-supervision-dice", str(folder), *extra],
                              ext_trainers=True).stdout.strip())


deep_supervision_dice.__test__ = False


@pytest.fixture(scope="module")
def ds(trained, tmp_path_factory):
    """deep-supervision-dice of the lean 3d fold on its validation cases (the default) and on its training cases,
    in one process: (printed rows of the validation run, its -o file, the training run's -o file)."""
    out = tmp_path_factory.mktemp("ds")
    folder = str(fold_dir(trained, "nnUNetTrainerLeanTiny", "nnUNetPlans", "3d_fullres"))
    (rc, _, stdout), (rc_train, _, _) = trained.cli_batch(
        [["deep-supervision-dice", folder, "-o", str(out / "val.json")],
         ["deep-supervision-dice", folder, "--cases", "train", "-o", str(out / "train.json")]], ext_trainers=True)
    assert rc == rc_train == 0
    return ds_rows(stdout.strip()), out / "val.json", out / "train.json"


def test_deep_supervision_dice_reads_every_output_at_its_resolution(trained, ds):
    folder = fold_dir(trained, "nnUNetTrainerLeanTiny", "nnUNetPlans", "3d_fullres")
    rows = ds[0]
    strides = load_json(trained.dataset_dir(HIPPO_ID) / "nnUNetPlans.json")["configurations"]["3d_fullres"][
        "architecture"]["arch_kwargs"]["strides"]
    assert [s for s, _ in rows] == ["full"] + [f"1/{2 ** i}" for i in range(1, len(strides) - 1)]
    # full resolution agrees with nnU-Net's own validation of the fold (which averages per case)
    validation = load_json(folder / "validation" / "summary.json")["foreground_mean"]["Dice"]
    assert rows[0][1] > MIN_DICE and abs(rows[0][1] - validation) < 0.05, (rows, validation)


def test_deep_supervision_dice_on_the_training_cases(trained, ds):
    """--cases train: each output's Dice on the fold's training cases (how well the network fits them), per
    label too; the foreground mean is the mean of the labels; other cases than the validation ones."""
    (fold,), (val,) = load_json(ds[2]), load_json(ds[1])
    assert val["cases"] == "val"
    full = fold["outputs"][0]
    assert full["dice_per_label"] != val["outputs"][0]["dice_per_label"], (full, val)
    assert fold["cases"] == "train" and full["factor"] == [1, 1, 1]
    labels = load_json(trained.dataset_dir(HIPPO_ID, "raw") / "dataset.json")["labels"]
    assert sorted(full["dice_per_label"]) == sorted(str(v) for v in labels.values() if v), full
    per_label = list(full["dice_per_label"].values())
    assert full["dice"] > MIN_DICE and abs(full["dice"] - sum(per_label) / len(per_label)) < 1e-9, full


def test_resume_refuses_a_checkpoint_of_another_recipe(trained):
    """A run begun with nnU-Net's SGD before nnUNetTrainerLean (here its Nf=16 variant, LeanTiny's network) had the
    lean recipe: --c refuses it and names the trainer that has the old recipe; under that trainer's name it resumes."""
    from nnunet_lean.recipe import NnunetRecipe
    ckpt = torch.load(fold_dir(trained, "nnUNetTrainerLeanTiny", "nnUNetPlans", "3d_fullres") / "checkpoint_final.pth",
                      map_location="cpu", weights_only=False)
    # one parameter per stored tensor (torch.save keeps the network's shared modules shared)
    params = [torch.nn.Parameter(w.float()) for w in
              {w.data_ptr(): w for w in ckpt["network_weights"].values()}.values()]

    class Old:  # what nnU-Net's configure_optimizers reads
        network, initial_lr, weight_decay, num_epochs = torch.nn.ParameterList(params), 1e-2, 3e-5, 1000
    ckpt["optimizer_state"] = NnunetRecipe.configure_optimizers(Old())[0].state_dict()
    ckpt["current_epoch"] = 999  # one epoch of nnUNetTrainerLean's 1000 left: an unfinished run
    lean = "nnUNetTrainerLean_Nf16"
    folder = fold_dir(trained, lean, "nnUNetPlans", "3d_fullres")
    folder.mkdir(parents=True)
    torch.save(ckpt, folder / "checkpoint_latest.pth")
    args = ["nnUNetv2_train", str(HIPPO_ID), "3d_fullres", "0", "-p", "nnUNetPlans", "-device", "cpu", "--c"]
    proc = trained.run(args + ["-tr", lean], training=True, check=False)
    assert proc.returncode != 0 and not (folder / "checkpoint_final.pth").exists()
    assert (f"this checkpoint was trained with SGD, lr 0.01, but {lean} now trains with Adam, lr 0.01: "
            f"resume it with -tr {lean}SGD after renaming the folder "
            f"{lean}__nnUNetPlans__3d_fullres to {lean}SGD__nnUNetPlans__3d_fullres") \
        in proc.stderr, proc.stderr[-2000:]
    renamed = fold_dir(trained, f"{lean}SGD", "nnUNetPlans", "3d_fullres").parent
    folder.parent.rename(renamed)
    ckpt["current_epoch"] = 1000  # (so that this test trains no 250-step epoch: the run is just finished)
    torch.save(ckpt, renamed / "fold_0" / "checkpoint_latest.pth")
    trained.run(args + ["-tr", f"{lean}SGD"], training=True)
    final = torch.load(renamed / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["optimizer_state"]["param_groups"][0]["momentum"] == 0.99 and final["current_epoch"] == 1000
