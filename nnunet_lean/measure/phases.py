"""Where a training epoch's time goes: waiting for batches against running the steps.

nnU-Net logs only each epoch's start and end. A study that compares networks by their epoch times needs to
know how much of an epoch the network is: with ``nnUNet_n_proc_DA=0`` (our CPU studies) data loading and
augmentation run in the main process, between the steps, and cost about the same for every network.
"""
from __future__ import annotations

import re
from time import perf_counter
from typing import Callable, Dict, List

PHASES = ("train data", "train steps", "val data", "val steps")
PREFIX = "epoch phases (s): "
_LINE = re.compile(re.escape(PREFIX) + r"(.*)$")


class EpochPhases:
    """Trainer mixin: per epoch, the seconds spent waiting for the next batch and inside ``train_step`` /
    ``validation_step``, logged as one line (``PREFIX``, with the epoch's number) before nnU-Net's epoch lines.
    On a GPU a step's time includes the wait for the device (nnU-Net's steps copy their loss to the host)."""

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._phases = dict.fromkeys(PHASES, 0.0)
        self._mark = perf_counter()

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._mark = perf_counter()

    def _timed(self, kind: str, step: Callable[[dict], dict], batch: dict) -> dict:
        began = perf_counter()
        self._phases[f"{kind} data"] += began - self._mark
        out = step(batch)
        self._mark = perf_counter()
        self._phases[f"{kind} steps"] += self._mark - began
        return out

    def train_step(self, batch: dict) -> dict:
        return self._timed("train", super().train_step, batch)

    def validation_step(self, batch: dict) -> dict:
        return self._timed("val", super().validation_step, batch)

    def on_epoch_end(self) -> None:
        self.print_to_log_file(f"{PREFIX}epoch {self.current_epoch}, "
                               + ", ".join(f"{k} {v:.2f}" for k, v in self._phases.items()))
        super().on_epoch_end()


def read_phases(log_text: str) -> List[Dict[str, float]]:
    """The phases of every epoch logged by :class:`EpochPhases` in a training log, in order; each row also
    holds its ``epoch``."""
    rows = []
    for line in log_text.splitlines():
        m = _LINE.search(line.rstrip())
        if m:
            rows.append({k: float(v) for k, v in (p.rsplit(" ", 1) for p in m.group(1).split(", "))})
    return rows
