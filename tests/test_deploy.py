"""Deployment: `nnunet_lean export` and `nnunet_lean predict` on two STAMP folds pruned to different
widths (the shared `stamp` fixture), against stock nnUNetv2_predict of the same folds."""
import json
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import HIPPO_ID, PRUNE_PLANS, STAMP, fold_dir, labels_of, load_json, per_label_dice, side_by_side

RUN = ["-d", str(HIPPO_ID), "-c", "3d_fullres", "-tr", STAMP, "-p", PRUNE_PLANS]
AGREE = 0.999   # per-label Dice between a backend's segmentation and nnUNetv2_predict's


@pytest.fixture(scope="module")
def reference(stamp_predicted):
    return labels_of(stamp_predicted)   # stock nnUNetv2_predict of folds 0 and 1


def predict(nnunet, out, *args, env=None):
    images = nnunet.dataset_dir(HIPPO_ID, "raw") / "imagesTs"
    cmd = ["nnunet_lean", "predict", "-i", str(images), "-o", str(out), "--threads", "2", "-npp", "1", "-nps", "1",
           "--disable_progress_bar", *args]
    if env is None:
        return nnunet.run(cmd, ext_trainers=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600)


def listing(folder: Path) -> list:
    return sorted(str(p) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def exported(stamp, tmp_path_factory):
    """`nnunet_lean export` of folds 0 and 1; it writes nothing into nnUNet_results. (folder, stdout)"""
    results = stamp.dataset_dir(HIPPO_ID, "results")
    before = listing(results)
    out = tmp_path_factory.mktemp("export") / "export"
    proc = stamp.run(["nnunet_lean", "export", *RUN, "-f", "0", "1", "-o", str(out)], ext_trainers=True)
    assert listing(results) == before
    return out, proc.stdout


def test_export_checks_itself_and_describes_the_folds(stamp, exported):
    out, stdout = exported
    manifest = load_json(out / "manifest.json")
    # nnU-Net's postprocessing travels when find_best_configuration has written it (test_pruning_end_to_end may
    # have run first)
    run = fold_dir(stamp, STAMP, PRUNE_PLANS, "3d_fullres", None)
    pp = sorted(f"postprocessing/{f.parent.name}/{f.name}"
                for f in run.glob("crossval_results_folds_*/postprocessing.*"))
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "fold_0.onnx", "fold_1.onnx", "manifest.json",
                                                      "plans.json"] + (["postprocessing"] if pp else [])
    assert manifest["trainer"] == STAMP and manifest["configuration"] == "3d_fullres" and manifest["opset"] == 17
    assert manifest["precision"] == "fp32" and manifest["mirroring_axes"] == [0, 1, 2]
    plans = load_json(stamp.dataset_dir(HIPPO_ID) / f"{PRUNE_PLANS}.json")["configurations"]["3d_fullres"]
    assert manifest["input"]["patch_size"] == plans["patch_size"] and manifest["input"]["shape"][:2] == [1, 1]
    f0, f1 = manifest["folds"]
    assert f0["widths"] != f1["widths"] and f0["parameters"] != f1["parameters"]  # pruned differently
    trained = load_json(fold_dir(stamp, STAMP, PRUNE_PLANS, "3d_fullres", 1) / "pruning_history.json")
    assert sorted(f1["widths"].values()) == sorted(trained["steps"][-1]["widths"].values())
    for f in (f0, f1):
        c = f["self_check"]
        assert c["passed"] and c["max_abs_diff"] < 1e-3 * c["logit_range"] and c["logit_range"] > 1
    assert set(manifest["files"]) == {"dataset.json", "fold_0.onnx", "fold_1.onnx", "plans.json", *pp}
    assert {"torch", "nnunetv2", "onnxruntime"} <= set(manifest["versions"])
    assert "fold 1: fold_1.onnx" in stdout


def test_backends_agree_with_nnunet_predict_and_exports_travel(stamp, reference, exported, tmp_path):
    results = stamp.dataset_dir(HIPPO_ID, "results")
    before = listing(results)
    # the export copied elsewhere predicts with no nnUNet_results at all, and without the original folder
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(exported[0], moved)
    hidden = exported[0].with_name("hidden")
    bare = {k: v for k, v in stamp.env().items() if k not in ("nnUNet_results", "nnUNet_raw", "nnUNet_preprocessed")}
    exported[0].rename(hidden)
    # two streams side by side (process start-up dominates these tiny predictions)
    def stream_a():
        predict(stamp, tmp_path / "onnxruntime", "-m", str(moved), "--backend", "onnxruntime", "-npp", "0", "-nps",
                "0", env=bare)   # nnU-Net's sequential path (no worker processes)
        predict(stamp, tmp_path / "openvino", "-m", str(moved), "--backend", "openvino", env=bare)

    def stream_b():
        predict(stamp, tmp_path / "bf16", "-m", str(moved), "--backend", "openvino", "--bf16", "-npp", "0", "-nps",
                "0", env=bare)
        # from the trained folds: torch directly (the on-the-fly export for an ONNX backend: test_end_to_end's 2d
        # fold)
        predict(stamp, tmp_path / "torch", *RUN, "-f", "0", "1", "--backend", "torch", "-npp", "0", "-nps", "0")
    try:
        side_by_side(stream_a, stream_b)
    finally:
        hidden.rename(exported[0])
    assert listing(results) == before  # nothing written into nnUNet_results
    for backend in ("onnxruntime", "openvino", "torch"):
        dice = per_label_dice(labels_of(tmp_path / backend), reference)
        assert dice and min(dice.values()) >= AGREE, (backend, dice)
    # bf16 is a predict flag: it changes the logits a little, the segmentation barely (predicted above)
    dice = per_label_dice(labels_of(tmp_path / "bf16"), reference)
    assert min(dice.values()) >= 0.95, dice
    # nnU-Net's postprocessing runs on the output unchanged (plans.json and dataset.json are there)
    from nnunetv2.postprocessing.remove_connected_components import \
        remove_all_but_largest_component_from_segmentation as largest
    pkl = tmp_path / "pp.pkl"
    pkl.write_bytes(pickle.dumps(([largest], [{"labels_or_regions": [1]}])))
    stamp.run(["nnUNetv2_apply_postprocessing", "-i", str(tmp_path / "openvino"), "-o", str(tmp_path / "pp"),
               "-pp_pkl_file", str(pkl), "-np", "1"])
    assert len(list((tmp_path / "pp").glob("*.nii.gz"))) == len(reference)


def run_cli(argv, capsys):
    from nnunet_lean.cli import main
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_inputs_print_one_line_exit_2_and_write_nothing(stamp, tmp_path, capsys, monkeypatch):
    for k, v in stamp.env(ext_trainers=True).items():
        monkeypatch.setenv(k, v)
    images = str(stamp.dataset_dir(HIPPO_ID, "raw") / "imagesTs")
    good = tmp_path / "good"
    assert run_cli(["export", *RUN, "-f", "0", "-o", str(good)], capsys)[0] == 0
    out = tmp_path / "out"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("not an export")
    cases = [
        (["export", *RUN, "-f", "0", "4", "-o", str(tmp_path / "x")], "has no fold 4 (trained folds: 0, 1"),
        (["export", *RUN, "-o", str(tmp_path / "x")], "has no fold 2 (trained folds: 0, 1"),   # nnU-Net's 0..4
        (["export", *RUN, "-f", "0", "-o", str(other), "--overwrite"], "is not an export folder"),
        (["export", *RUN, "-f", "0", "-o", str(good)], "exists: give another -o, or --overwrite"),
        (["export", *RUN[:-2], "-p", "NoSuchPlans", "-f", "0", "-o", str(tmp_path / "x")], "no trained run"),
        (["predict", "-i", images, "-o", str(out), "-m", str(tmp_path)], "is not an export folder"),
        (["predict", "-i", images, "-o", str(out), "-m", str(good), "-f", "1"], "holds folds 0, not 1"),
        (["predict", "-i", images, "-o", str(out), "-m", str(good), "--backend", "torch"], "the torch backend"),
        (["predict", "-i", images, "-o", str(out), "-m", str(good), "--backend", "onnxruntime", "--bf16"],
         "onnxruntime does not run bf16: use --backend torch or openvino"),
        (["predict", "-i", str(tmp_path / "nope"), "-o", str(out), "-m", str(good)], "is not a folder"),
    ]
    for argv, message in cases:
        code, err = run_cli(argv, capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("nnunet_lean: error:") and message in err[0], \
            (argv, err)
    # a changed file and a missing backend
    (good / "plans.json").write_text(json.dumps(load_json(good / "plans.json")) + " ")
    code, err = run_cli(["predict", "-i", images, "-o", str(out), "-m", str(good)], capsys)
    assert code == 2 and "changed since it was exported" in err[0]
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # as if not installed
    code, err = run_cli(["predict", "-i", images, "-o", str(out), "-m", str(tmp_path / "x"),
                         "--backend", "openvino"], capsys)
    assert code == 2 and 'pip install "nnunet-lean[deploy]"' in err[0], err
    assert not out.exists() and not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good", "notes"]  # no temporary export left either
    assert (other / "keep.txt").read_text() == "not an export"


def test_a_cascade_stage_is_refused_in_one_line(stamp, tmp_path):
    """3d_cascade_fullres needs the 3d_lowres prediction as an input channel: export (which the ONNX backends
    of predict -d run first) and the torch backend refuse it in one line, exit 2, writing nothing. The stage
    is a copy of a trained fold whose plans make it one, in a results tree of its own."""
    src = fold_dir(stamp, STAMP, PRUNE_PLANS, "3d_fullres", None)
    results = tmp_path / "results"
    run = results / src.parent.name / f"{STAMP}__{PRUNE_PLANS}__3d_cascade_fullres"
    shutil.copytree(src / "fold_0", run / "fold_0")
    plans = load_json(src / "plans.json")
    plans["configurations"]["3d_lowres"] = {"inherits_from": "3d_fullres", "next_stage": "3d_cascade_fullres"}
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    (run / "plans.json").write_text(json.dumps(plans))
    shutil.copy(src / "dataset.json", run / "dataset.json")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    cascade = ["-d", str(HIPPO_ID), "-c", "3d_cascade_fullres", "-tr", STAMP, "-p", PRUNE_PLANS, "-f", "0"]
    images = str(stamp.dataset_dir(HIPPO_ID, "raw") / "imagesTs")
    message = ("3d_cascade_fullres is a cascade stage (it needs the 3d_lowres prediction as input): use "
               "nnUNetv2_predict for it, or export and predict 3d_fullres or 2d")
    refused = stamp.cli_batch([["export", *cascade, "-o", str(tmp_path / "export")],
                               ["predict", "-i", images, "-o", str(tmp_path / "pred"), *cascade, "--backend", "torch"]],
                              ext_trainers=True, extra_env={"nnUNet_results": str(results)})
    assert len(refused) == 2
    for rc, stderr, _ in refused:
        err = stderr.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], stderr[-2000:]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
