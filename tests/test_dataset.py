"""The synthetic hippocampus-like dataset and `nnunet_lean make-dataset`."""
import json

import numpy as np
import SimpleITK as sitk

from nnunet_lean.datasets.hippocampus import make_case


def test_cases_are_deterministic_and_differ_by_seed():
    a1, l1 = make_case(3, size=32)
    a2, l2 = make_case(3, size=32)
    b, lb = make_case(4, size=32)
    assert np.array_equal(a1, a2) and np.array_equal(l1, l2)
    assert not np.array_equal(l1, lb)


def test_structure_is_small_curved_and_visible():
    image, label = make_case(0, size=48, noise=0.0)
    fg = label > 0
    assert 0.005 < fg.mean() < 0.06  # a small structure, like a hippocampus in a brain crop
    # curved: its bounding box holds much more than the structure itself
    zz, yy, xx = np.nonzero(fg)
    box = (np.ptp(zz) + 1) * (np.ptp(yy) + 1) * (np.ptp(xx) + 1)
    assert fg.sum() / box < 0.35
    # visible: the white-matter rim around it is brighter than the structure
    from scipy import ndimage
    rim = ndimage.binary_dilation(fg, iterations=2) & ~fg
    assert image[rim].mean() > image[fg].mean() + 0.03


def test_multilabel_splits_head_and_tail():
    _, label = make_case(1, size=32, multilabel=True)
    assert set(np.unique(label)) == {0, 1, 2}


def test_cli_writes_an_nnunet_raw_dataset(nnunet):
    nnunet.run(["nnunet_lean", "make-dataset", "-d", "601", "--name", "Tiny", "-n", "3", "--num-test", "1",
                "--size", "16", "--multilabel"])
    folder = nnunet.raw / "Dataset601_Tiny"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"Tiny_{i:03d}_0000.nii.gz" for i in range(3)]
    assert [p.name for p in (folder / "labelsTs").iterdir()] == ["Tiny_003.nii.gz"]
    img = sitk.ReadImage(str(folder / "imagesTr" / "Tiny_000_0000.nii.gz"))
    assert img.GetSize() == (16, 16, 16) and img.GetSpacing() == (1.0, 1.0, 1.0)
    assert [p.name for p in nnunet.raw.iterdir() if p.name.startswith(".")] == []  # no temp folder left

    # an existing id is refused in one line, the dataset untouched; --overwrite replaces it
    stamp = (folder / "dataset.json").stat().st_mtime_ns
    proc = nnunet.run(["nnunet_lean", "make-dataset", "-d", "601", "--name", "Other", "-n", "2"], check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pass --overwrite" in proc.stderr
    assert (folder / "dataset.json").stat().st_mtime_ns == stamp
    assert not (nnunet.raw / "Dataset601_Other").exists()
    nnunet.run(["nnunet_lean", "make-dataset", "-d", "601", "--name", "Other", "-n", "2", "--size", "16",
                "--overwrite"])
    assert not folder.exists() and (nnunet.raw / "Dataset601_Other" / "dataset.json").exists()


def test_cli_needs_nnunet_raw(nnunet):
    import subprocess
    env = nnunet.env()
    del env["nnUNet_raw"]
    proc = subprocess.run(["nnunet_lean", "make-dataset", "-d", "602"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "export nnUNet_raw=" in proc.stderr and proc.stderr.count("\n") == 1


def test_airway_cases_have_all_five_tree_labels_in_air():
    from nnunet_lean.datasets import airway

    from scipy import ndimage

    image, label = airway.make_case(0, size=64)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4, 5}
    assert np.array_equal(label, airway.make_case(0, size=64)[1])
    # lumen is air (blurred at its edge), its soft-tissue wall much brighter: the tree is visible
    fg = label > 0
    rim = ndimage.binary_dilation(fg, iterations=2) & ~fg
    assert image[fg].mean() < -850 and image[rim].mean() > image[fg].mean() + 300
    # left (4) and right (5) bronchi lie on opposite sides of the carina (3)
    x = lambda k: np.nonzero(label == k)[2].mean()
    assert (x(4) - x(3)) * (x(5) - x(3)) < 0


def test_mni_cases_deform_the_real_template():
    from nnunet_lean.datasets import mni

    image, label = mni.make_case(0, spacing=4.0)
    other = mni.make_case(1, spacing=4.0)[1]
    assert image.shape == mni.template(4.0)[0].shape == (47, 58, 49)
    counts = np.bincount(label.ravel(), minlength=3)
    assert counts[1] > 0.1 * label.size and counts[2] > 0.05 * label.size  # a brain's grey and white matter
    assert image[label == 2].mean() > image[label == 1].mean()  # T1: white matter is brighter
    assert 0.02 < (label != other).mean() < 0.5  # another random deformation, same anatomy


def test_cli_kinds(nnunet):
    nnunet.run(["nnunet_lean", "make-dataset", "-d", "603", "--kind", "mni", "-n", "2", "--num-test", "0",
                "--spacing", "6"])
    meta = json.loads((nnunet.raw / "Dataset603_LeanMNI" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "grey_matter": 1, "white_matter": 2}
    img = sitk.ReadImage(str(nnunet.raw / "Dataset603_LeanMNI" / "imagesTr" / "LeanMNI_000_0000.nii.gz"))
    assert img.GetSpacing() == (6.0, 6.0, 6.0)
    nnunet.run(["nnunet_lean", "make-dataset", "-d", "604", "--kind", "airway", "-n", "2", "--num-test", "0",
                "--size", "24"])
    meta = json.loads((nnunet.raw / "Dataset604_LeanAirway" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and len(meta["labels"]) == 6
