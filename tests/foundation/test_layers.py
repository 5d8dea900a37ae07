"""The foundation is a floor: files, artifact names, provenance, figures and the run folder import nothing of
cervirad above them (issue 22 item 2), and files are read as JSON in one place (item 4)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import cervirad

SRC = Path(cervirad.__file__).parent

# module -> the cervirad modules it may import (module level or inside a function)
FLOOR = {
    "errors": set(),
    "jsonutil": set(),
    "files": {"errors", "jsonutil"},
    "layout": {"errors"},
    "provenance": {"cervirad"},  # __version__
    "plotting": {"files"},
    "rundir": {"errors", "files", "layout", "provenance"},
    "splits": {"errors", "files", "layout"},
}


def cervirad_imports(module: str) -> set[str]:
    tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {"cervirad"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cervirad"):
            found.add(node.module.removeprefix("cervirad.") if node.module != "cervirad" else "cervirad")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("cervirad.") for a in node.names if a.name.startswith("cervirad")}
    return found


def test_foundation_modules_import_only_the_floor_below():
    for module, allowed in FLOOR.items():
        assert cervirad_imports(module) <= allowed, (module, cervirad_imports(module) - allowed)


def test_io_and_stages_do_not_import_the_demo_or_the_run_folder_from_io():
    assert not cervirad_imports("io") & {"rundir", "demo", "config"}
    stage_modules = [p for p in SRC.rglob("*.py") if p.name not in ("pipeline.py", "demo.py")
                     and "cli" not in p.relative_to(SRC).parts]
    importers = [str(p.relative_to(SRC)) for p in stage_modules
                 if re.search(r"^\s*from \.+demo import|^\s*import cervirad\.demo", p.read_text(encoding="utf-8"), re.M)]
    assert importers == []


def test_json_files_are_read_by_files_read_json_only():
    inline = re.compile(r"json\.loads\([^\n]*\.read_text\(")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.name != "files.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if inline.search(line)]
    assert hits == []
