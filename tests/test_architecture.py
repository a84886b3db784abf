"""docs/architecture.md's module table is the code's: each module imports exactly the project modules the
table lists, only the Ray rooms import ray, and only the CLI imports typer."""

import ast
import re

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "rnn_mnist"
RAY_ROOMS = {"ray_train", "grid", "jobs_api"}


def room(path) -> str:
    """A module's name in the table: kernels/ is one room."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imports(path) -> tuple[set, set]:
    """(project rooms, outside top-level packages) that a file imports."""
    own, outside = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = [node.module] if node.module else [a.name for a in node.names]
            if node.level == 2 or path.parent == PACKAGE:  # relative to the package itself
                own.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.ImportFrom):
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(a.name.split(".")[0] for a in node.names)
    return own, outside


def table() -> dict:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| .* \| ([\w, -]+) \|$", text, re.M)
    return {name: set() if deps.strip() == "-" else {d.strip() for d in deps.split(",")} for name, deps in rows}


def code() -> dict:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = room(path)
        if name in ("__init__", "__main__"):
            continue
        own, outside = found.setdefault(name, (set(), set()))
        more_own, more_outside = imports(path)
        own.update(more_own - {name})
        outside.update(more_outside)
    return found


def test_the_table_lists_every_module():
    assert set(table()) == set(code())


@pytest.mark.parametrize("name", sorted(code()))
def test_each_module_imports_what_the_table_says(name):
    assert code()[name][0] == table()[name]


def test_only_the_ray_rooms_import_ray_and_only_the_cli_imports_typer():
    found = code()
    assert {name for name, (_, outside) in found.items() if "ray" in outside} == RAY_ROOMS
    assert {name for name, (_, outside) in found.items() if "typer" in outside} == {"cli"}


def test_no_module_uses_private_names_of_other_packages():
    private = re.compile(r"\b(?!rnn_mnist)\w+(\.\w+)*\.(_private|_internal|_run_exitfuncs)\b|\bos\._exit\(")
    allowed = {"ray_train.py": "os._exit(1)"}  # fault injection: a worker that dies, on purpose
    for path in PACKAGE.rglob("*.py"):
        for line in path.read_text().splitlines():
            if private.search(line) and allowed.get(path.name, "\0") not in line:
                pytest.fail(f"{path.relative_to(ROOT)}: {line.strip()}")


def test_the_cli_starts_without_torch_or_ray():
    # they take seconds to import: the commands that only read records (results, watch) or talk to a cluster's
    # Jobs API import them where they train, evaluate or start Ray
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, rnn_mnist.cli; print(sorted({'torch', 'ray'} & "
                             "{name.split('.')[0] for name in sys.modules}))"], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout.strip()
    assert loaded == "[]"
