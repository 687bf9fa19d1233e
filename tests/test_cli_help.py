"""Every `nnunet_lean` subcommand prints its help (argparse formats help strings with %: one stray % broke it)."""
import pytest

from nnunet_lean.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


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
