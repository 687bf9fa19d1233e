"""The package's structure: no import cycle (function-level imports included), only the command line
exits, one error family, and the import paths users already store still resolve."""
import ast
import pydoc
from pathlib import Path

import nnunet_lean

PACKAGE = Path(nnunet_lean.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set:
    """Every nnunet_lean module this file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nnunet_lean"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nnunet_lean"))
    return found


def test_no_import_cycle_even_through_function_level_imports():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing nothing, importing a submodule does not import its siblings
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert len(graph) > 20


def test_only_the_command_line_exits():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                raise AssertionError(f"sys.exit in {path.relative_to(PACKAGE)}")
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                raise AssertionError(f"SystemExit in {path.relative_to(PACKAGE)}")


def test_user_facing_errors_share_one_base():
    from nnunet_lean.datasets.raw import DatasetError
    from nnunet_lean.errors import CommandError, LeanError, RunError
    from nnunet_lean.plans_modifier import PlansError
    from nnunet_lean.study import StudyError
    from nnunet_lean.widths import WidthError
    for cls in (DatasetError, PlansError, RunError, CommandError, StudyError, WidthError):
        assert issubclass(cls, LeanError)


def test_stored_import_paths_resolve():
    # plans written by `pruned-plans` name the network by this dotted path (nnU-Net resolves it so)
    from nnunet_lean.pruning.network import PrunableUNet
    assert pydoc.locate("nnunet_lean.pruning.network.PrunableUNet") is PrunableUNet
    # users' trainer subclasses import these
    from nnunet_lean.pruning.trainer import (HISTORY_FILE, PLOT_FILE, QuickPruning,  # noqa: F401
                                             nnUNetTrainerPruneRandomInSTAMPBlock, nnUNetTrainerPruneRandomWidest,
                                             nnUNetTrainerSTAMP, prunable_architecture)
    from nnunet_lean.training import (QuickSchedule, ScheduleOverrides, nnUNetTrainerLean,  # noqa: F401
                                      nnUNetTrainerScaled50, nnUNetTrainerWidths)
    assert HISTORY_FILE == "pruning_history.json" and PLOT_FILE == "pruning.png"
