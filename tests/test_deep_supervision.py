"""`nnunet_lean deep-supervision-dice` refuses what it cannot read in one line, writing nothing."""
import subprocess
import sys
from pathlib import Path

import pytest

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
