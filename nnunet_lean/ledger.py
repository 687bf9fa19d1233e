"""A study's ledger: the results of its finished runs in one JSON file meant to be committed beside the
code, so that a study goes on after its folders are lost (another machine, a wiped cache). A run recorded
there counts as finished and is not trained again; a ledger is bound to the budget it was begun with.

    {"budget": {...}, "runs": {"Dataset980_X/nnUNetTrainerBudget__UnetNf4__3d_fullres/fold_0": {...}, ...}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from nnunet_lean.errors import StudyError
from nnunet_lean.jsonio import write_json_atomically


def run_key(name: str, plans: str, trainer: str, fold: int, configuration: str = "3d_fullres") -> str:
    """A run's key: its fold folder relative to nnU-Net's results folder."""
    return f"{name}/{trainer}__{plans}__{configuration}/fold_{fold}"


class Ledger:
    def __init__(self, path: str, budget: Dict[str, object]):
        """Open the ledger at ``path`` (created on the first record); StudyError if it holds another budget."""
        self.path = Path(path).expanduser().resolve()
        self.budget = budget
        self.runs: Dict[str, dict] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                began, runs = data["budget"], data["runs"]
            except (ValueError, KeyError, TypeError) as e:
                raise StudyError(f"{self.path} is not a study ledger ({e}): give another --ledger") from None
            if began != budget:
                raise StudyError(f"ledger {self.path} records a study with budget {began}: rerun with those "
                                 f"values or give another --ledger")
            self.runs = runs

    def get(self, key: str) -> Optional[dict]:
        return self.runs.get(key)

    def record(self, key: str, result: dict) -> None:
        """Record a finished run's result (rewrites the file only when it changes)."""
        if self.runs.get(key) != result:
            self.runs[key] = result
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically({"budget": self.budget, "runs": self.runs}, str(self.path), indent=1)
