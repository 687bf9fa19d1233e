"""`nnunet_lean modify-plans`: derived plans, the printed table, and refusals that write nothing."""
from conftest import HIPPO_ID, load_json


def widths(plans, config):
    return plans["configurations"][config]["architecture"]["arch_kwargs"]["features_per_stage"]


def test_lean_nf_writes_new_plans_and_prints_param_counts(hippo):
    folder = hippo.dataset_dir(HIPPO_ID)
    proc = hippo.run(["nnunet_lean", "modify-plans", "-d", str(HIPPO_ID), "-p", "nnUNetPlans",
                      "-o", "nnUNetPlansNf8", "--nf", "8"])
    src, new = load_json(folder / "nnUNetPlans.json"), load_json(folder / "nnUNetPlansNf8.json")
    assert new["plans_name"] == "nnUNetPlansNf8"
    for config in ("2d", "3d_fullres"):
        assert widths(new, config) == [8] * len(widths(src, config))
        # preprocessed data is shared with the source plans
        assert new["configurations"][config]["data_identifier"] == src["configurations"][config]["data_identifier"]
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {config} |"))
        before, after = (int(c.replace(",", "")) for c in row.split("|")[4:6])
        assert after < before / 10


def test_scale_and_budget(hippo):
    folder = hippo.dataset_dir(HIPPO_ID)
    src = load_json(folder / "nnUNetPlans.json")
    n3 = len(widths(src, "3d_fullres"))
    arch3 = src["configurations"]["3d_fullres"]["architecture"]
    from nnunet_lean.architecture import count_parameters, with_widths
    budget = count_parameters(with_widths(arch3, [16] * n3), 1, 2)
    results = hippo.cli_batch([
        ["modify-plans", "-d", str(HIPPO_ID), "--scale", "0.5"],
        ["modify-plans", "-d", "Dataset501_LeanHippocampus", "-c", "3d_fullres", "--budget", str(budget),
         "-o", "nnUNetPlansBudget"],
    ])
    assert [r[0] for r in results] == [0, 0]
    half = load_json(folder / "nnUNetPlans_Scaled50.json")
    assert widths(half, "3d_fullres") == [w // 2 for w in widths(src, "3d_fullres")]
    budgeted = load_json(folder / "nnUNetPlansBudget.json")
    assert widths(budgeted, "3d_fullres") == [16] * n3
    assert widths(budgeted, "2d") == widths(src, "2d")  # -c limits the change


BAD = [
    (["-d", "999", "--nf", "8"], "unknown dataset"),
    (["-d", "501", "-p", "NoSuchPlans", "--nf", "8"], "no plans 'NoSuchPlans'"),
    (["-d", "501", "-c", "3d_lowres", "--nf", "8"], "configuration '3d_lowres' not in"),
    (["-d", "501", "--nf", "0"], "--nf must be >= 1"),
    (["-d", "501", "--scale", "0"], "scale must be > 0"),
    (["-d", "501", "--scale", "-1.5"], "scale must be > 0"),
    (["-d", "501", "--budget", "0"], "budget must be >= 1"),
    (["-d", "501", "--budget", "100"], "too small even for Nf=1"),
    (["-d", "501", "--nf", "8", "-o", "nnUNet__Plans"], "contains '__'"),
    (["-d", "501", "--nf", "8", "-o", "nnUNetLeanPlans"], "exists: pass --overwrite"),
]


def test_bad_input_one_line_exit_2_nothing_written(hippo):
    folder = hippo.dataset_dir(HIPPO_ID)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # the console script once, the other refusals through its main() in one process
    proc = hippo.run(["nnunet_lean", "modify-plans"] + BAD[0][0], check=False)
    results = [[proc.returncode, proc.stderr, proc.stdout]] + hippo.cli_batch([["modify-plans"] + argv
                                                                              for argv, _ in BAD[1:]])
    for (argv, message), (rc, stderr, _) in zip(BAD, results):
        lines = stderr.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("nnunet_lean: error: ") and message in lines[0], \
            (argv, lines)
    assert len(results) == len(BAD)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_overwrite_replaces_an_existing_target(hippo):
    folder = hippo.dataset_dir(HIPPO_ID)
    results = hippo.cli_batch([["modify-plans", "-d", str(HIPPO_ID), "-o", "nnUNetPlansTwice", "--nf", "4"],
                               ["modify-plans", "-d", str(HIPPO_ID), "-o", "nnUNetPlansTwice", "--nf", "6",
                                "--overwrite"]])
    assert [r[0] for r in results] == [0, 0], results
    assert set(widths(load_json(folder / "nnUNetPlansTwice.json"), "3d_fullres")) == {6}
