"""`nnunet_lean report`: default vs lean / scaled networks measured in one process."""
import json

import pytest

from conftest import HIPPO_ID


def test_report_compares_default_lean_and_scaled(hippo, tmp_path):
    out = tmp_path / "report"
    proc = hippo.run(["nnunet_lean", "report", "-d", str(HIPPO_ID), "-c", "3d_fullres", "-p", "nnUNetPlans",
                      "-tr", "nnUNetTrainerLean", "nnUNetTrainerScaled50", "--step-repeats", "2",
                      "--predict-repeats", "1", "-o", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    default, lean, half = data["results"]
    assert [r["label"] for r in data["results"]] == ["nnU-Net default (nnUNetTrainer)", "nnUNetTrainerLean",
                                                     "nnUNetTrainerScaled50"]
    assert data["meta"]["patch_size"] == [32, 32, 32] and data["meta"]["mirroring"] is False
    assert lean["parameters_ratio"] < 0.2 and lean["gflops_forward_ratio"] < 1
    # halving every width quarters the conv weights and, at equal resolution, the FLOPs
    assert half["parameters_ratio"] == pytest.approx(0.25, abs=0.02)
    assert half["gflops_forward_ratio"] == pytest.approx(0.25, abs=0.05)
    for r in data["results"]:
        assert r["train_step_s"] > 0 and r["predict_case_s"] > 0 and r["train_step_peak_mb"] > 0
    assert default["parameters"] == 5_602_950  # what count_parameters gives for these plans (test_widths)
    # tensor accounting: the default's step holds at least its weights, gradients and momentum (fp32);
    # halving every width halves every activation, so the peak must drop well below the default's
    assert default["train_step_peak_mb"] > 3 * 5_602_950 * 4 / 2 ** 20
    assert half["train_step_peak_mb_ratio"] < 0.75 and lean["train_step_peak_mb_ratio"] < 1
    table = out.with_suffix(".md").read_text()
    assert "| nnUNetTrainerLean |" in table and "step ratio" in table and "| nnUNetTrainerLean |" in proc.stdout


def test_report_refuses_unknown_inputs_in_one_line(hippo):
    cases = ((["-p", "NoPlans"], "no plans 'NoPlans'"), (["-c", "3d_lowres"], "not in nnUNetPlans"),
             (["-tr", "nnUNetTrainerNope"], "trainer 'nnUNetTrainerNope' not found"))
    results = hippo.cli_batch([["report", "-d", str(HIPPO_ID), *argv] for argv, _ in cases])
    for (argv, message), (rc, stderr, _) in zip(cases, results):
        ours = [line for line in stderr.splitlines() if line.startswith("nnunet_lean: error:")]
        # (nnU-Net's trainer lookup may add torch's own deprecation warnings above it)
        assert rc == 2 and len(ours) == 1 and message in ours[0], (argv, stderr)
    assert len(results) == len(cases)
