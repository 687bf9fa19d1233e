"""`nnunet_lean deep-supervision-dice` refuses what it cannot read in one line, writing nothing; it reads the
fold's validation or training cases from splits_final.json."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_lean.deep_supervision import fold_cases
from nnunet_lean.errors import RunError

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "is not a fold folder: give .../TRAINER__PLANS__CONFIG/fold_N"),
    (lambda p: p / "fold_0", "has no checkpoint_final.pth: finish the training first"),
])
def test_unreadable_fold_folders_fail_in_one_line(tmp_path, make, message):
    folder = make(tmp_path)
    folder.mkdir(exist_ok=True)
    proc = subprocess.run([str(BIN / "nnunet_lean"), "deep-supervision-dice", str(folder)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ([] if folder == tmp_path else ["fold_0"])


def test_fold_cases_are_the_folds_validation_or_training_cases(tmp_path):
    splits = [{"train": ["c", "a"], "val": ["b"]}, {"train": ["b", "a"], "val": ["c"]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(splits))
    assert fold_cases(tmp_path, 0) == ["b"] and fold_cases(tmp_path, 1, "val") == ["c"]
    assert fold_cases(tmp_path, 0, "train") == ["a", "c"] and fold_cases(tmp_path, 1, "train") == ["a", "b"]
    assert fold_cases(tmp_path, "all", "train") == ["a", "b", "c"]
    with pytest.raises(RunError, match="cases must be one of val, train"):
        fold_cases(tmp_path, 0, "test")
