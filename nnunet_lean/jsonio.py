"""JSON files that are either fully written or not there at all."""
from __future__ import annotations

import json
import os
import tempfile


def write_json_atomically(obj: dict, path: str, indent: int = 4) -> None:
    """Write to a temp file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
