"""The library's one error family.

Every error a user can fix derives from :class:`LeanError` and says in its message what to change.
The library raises them; only the command line (``cli.py`` and the scripts' ``main``) turns one into a
single line on stderr and exit code 2. Refusals inside the trainers (stock ``nnUNetv2_train``) stay
ordinary exceptions whose message names the fix, as nnU-Net's own do.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_USAGE = 2


class LeanError(Exception):
    """An error a user can fix; the message names the fix."""


class RunError(LeanError):
    """A folder that is not a trained run, or lacks what was asked of it."""


class StudyError(LeanError):
    """A study folder or ledger that cannot be opened as asked; the message names the fix."""


class CommandError(LeanError):
    """A stock nnU-Net command run by a study or script failed."""


def exit_on_error(main: Callable[[], int], prog: str) -> int:
    """Run a script's ``main``; a :class:`LeanError` becomes one line on stderr and exit code 2."""
    try:
        return main()
    except LeanError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
