"""An export folder: ``manifest.json`` beside one ``fold_N.onnx`` per fold, the plans.json and
dataset.json nnU-Net's pre/postprocessing need, and any postprocessing files of the run. The manifest
lists the sha256 of every file; reading an export checks them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from nnunet_lean.deploy.errors import DeployError

MANIFEST = "manifest.json"
FORMAT = "nnunet-lean-export/1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: Path) -> dict:
    """sha256 of every file under ``folder`` except the manifest, by relative path."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def read(folder: str, folds: Optional[Sequence[str]] = None) -> Tuple[dict, List[dict]]:
    """The manifest of an export folder and the entries of the folds asked for (all by default), after
    checking that every listed file is there and unchanged."""
    root = Path(folder).expanduser()
    path = root / MANIFEST
    if not path.is_file():
        raise DeployError(f"{folder} is not an export folder (no {MANIFEST}): make one with nnunet_lean export")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{path} is not valid JSON ({e.msg}): export again") from None
    if manifest.get("format") != FORMAT:
        raise DeployError(f"{path} is not a {FORMAT} manifest: export again with this nnunet-lean")
    for rel, digest in manifest["files"].items():
        f = root / rel
        if not f.is_file():
            raise DeployError(f"{f} is missing from the export: copy the whole folder, or export again")
        if sha256(f) != digest:
            raise DeployError(f"{f} changed since it was exported (sha256 differs): export again")
    entries = {str(e["fold"]): e for e in manifest["folds"]}
    wanted = [str(f) for f in folds] if folds else list(entries)
    missing = [f for f in wanted if f not in entries]
    if missing:
        raise DeployError(f"{folder} holds folds {', '.join(entries)}, not {', '.join(missing)}: pick them with -f")
    return manifest, [entries[f] for f in wanted]
