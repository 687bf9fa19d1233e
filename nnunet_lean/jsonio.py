"""Files (JSON, markdown) that are either fully written or not there at all."""
from __future__ import annotations

import json
import os
import tempfile


def _default_mode(directory: bool = False) -> int:
    """The mode open() (or mkdir) would give a new file (folder); mkstemp's is 0600 and mkdtemp's 0700,
    unreadable to a shared group."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def default_folder_mode() -> int:
    return _default_mode(directory=True)


def write_text_atomically(text: str, path: str) -> None:
    """Write to a temp file beside ``path``, then rename it over ``path``."""
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.chmod(tmp, _default_mode())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomically(obj: object, path: str, indent: int = 4) -> None:
    """``obj`` as JSON, written atomically."""
    write_text_atomically(json.dumps(obj, indent=indent), path)
