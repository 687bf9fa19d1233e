"""Every `nnunet_lean` subcommand prints its help (argparse formats help strings with %: one stray % broke it)."""
import re

import pytest

from nnunet_lean.cli import build_parser, main

# the subcommands as the usage line lists them: {a,b,...}
COMMANDS = sorted(re.search(r"\{([a-z,-]+)\}", build_parser().format_usage()).group(1).split(","))


def test_the_commands_are_the_documented_ones():
    assert COMMANDS == sorted(["make-dataset", "modify-plans", "plot-pruning", "pruned-plans", "report",
                               "deep-supervision-dice", "dice-vs-time", "export", "predict", "plan"])


@pytest.mark.parametrize("argv", [["-h"]] + [[c, "-h"] for c in COMMANDS])
def test_help_prints_and_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nnunet_lean") and len(out) > 100
