"""A lean plan shares another plans' preprocessed folder only when the data would be the same:
through the stock CLI, a lean plan at another spacing must not touch nnUNetPlans' arrays."""
import hashlib
import json

from conftest import HIPPO_ID, load_json

SPACED = "nnUNetLeanPlans2mm"


def folder_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lean_plans_share_the_default_data_only_when_it_is_the_same(hippo):
    pre = hippo.dataset_dir(HIPPO_ID)
    # the sharing case (the fixture's unflagged LeanPlanner): same data, one preprocessed folder
    lean = load_json(pre / "nnUNetLeanPlans.json")["configurations"]
    assert lean["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert not (pre / "nnUNetLeanPlans_3d_fullres").exists()

    before = {c: folder_hashes(pre / f"nnUNetPlans_{c}") for c in ("2d", "3d_fullres")}
    assert all(before.values())
    hippo.run(["nnUNetv2_plan_experiment", "-d", str(HIPPO_ID), "-pl", "LeanPlanner",
               "-overwrite_target_spacing", "2", "2", "2", "-overwrite_plans_name", SPACED])
    spaced = load_json(pre / f"{SPACED}.json")["configurations"]
    assert spaced["3d_fullres"]["spacing"] == [2.0, 2.0, 2.0]
    assert spaced["3d_fullres"]["data_identifier"] == f"{SPACED}_3d_fullres"
    assert spaced["2d"]["data_identifier"] == f"{SPACED}_2d"  # 2d takes the in-plane spacing too
    hippo.run(["nnUNetv2_preprocess", "-d", str(HIPPO_ID), "-plans_name", SPACED, "-c", "3d_fullres", "2d",
               "-np", "1", "1"])
    assert {c: folder_hashes(pre / f"nnUNetPlans_{c}") for c in ("2d", "3d_fullres")} == before
    assert folder_hashes(pre / f"{SPACED}_3d_fullres")
    hippo.run(["nnUNetv2_train", str(HIPPO_ID), "3d_fullres", "0", "-tr", "nnUNetTrainerShort", "-p", SPACED,
               "-device", "cpu"], ext_trainers=True, training=True)
    final = hippo.dataset_dir(HIPPO_ID, "results") / f"nnUNetTrainerShort__{SPACED}__3d_fullres" / "fold_0"
    assert (final / "checkpoint_final.pth").is_file()
    assert {c: folder_hashes(pre / f"nnUNetPlans_{c}") for c in ("2d", "3d_fullres")} == before


def test_another_preprocessor_gets_its_own_data(hippo):
    """A preprocessor name that differs (here a stock alias of the default) is not assumed equal."""
    hippo.python(
        "from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments\n"
        f"plan_experiments([{HIPPO_ID}], 'LeanPlanner', preprocess_class_name='OtherPreprocessor', "
        "overwrite_plans_name='nnUNetLeanPlansOtherPre')")
    plans = load_json(hippo.dataset_dir(HIPPO_ID) / "nnUNetLeanPlansOtherPre.json")
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetLeanPlansOtherPre_3d_fullres"
    assert json.dumps(plans).count("OtherPreprocessor") >= 2
