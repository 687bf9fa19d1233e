"""Atomic writes: the whole file or nothing, with the permissions a plain open() would give."""
import json
import os
import stat

from nnunet_lean.jsonio import write_json_atomically


def test_atomic_json_is_complete_leaves_no_temp_file_and_has_the_usual_mode(tmp_path):
    target = tmp_path / "plans.json"
    write_json_atomically({"a": 1}, str(target))
    write_json_atomically({"a": 2}, str(target))  # replaces
    assert json.loads(target.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["plans.json"]
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
