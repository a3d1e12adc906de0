"""The architecture's rules, read from the source: dependencies point one way, functions and
files stay small enough to read, and the training loop never branches on the task or the
model type (both are plug-ins)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "shared", "cli")
MAX_FUNCTION_LINES = 80
MAX_TRAIN_LINES = 60
MAX_FILE_LINES = 450


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"), [("api", ("worker",)), ("shared", ("api", "worker"))]
)
def test_dependencies_point_one_way(package, forbidden):
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources(package)
        for name in imported_modules(path)
        if name.split(".")[0] in forbidden
    ]
    assert not offenders, offenders


def test_no_function_is_too_long():
    long = [
        f"{path.relative_to(ROOT)}:{name} ({lines} lines)"
        for path in sources(*PACKAGES)
        for name, lines in functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_the_training_loop_reads_in_one_screen():
    lengths = dict(functions(ROOT / "worker" / "loop.py"))
    assert lengths["train"] <= MAX_TRAIN_LINES, lengths["train"]


def test_no_file_is_too_long():
    long = [
        f"{path.relative_to(ROOT)} ({n} lines)"
        for path in sources(*PACKAGES)
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    ]
    assert not long, long


def test_the_loop_never_branches_on_the_task_or_the_model_type():
    from shared.registry import MODEL_TYPES, TASKS

    names = "|".join(re.escape(n) for n in (*TASKS, *MODEL_TYPES))
    branch = re.compile(rf"task\s*[!=]=|model\.type\s*[!=]=|\b(if|elif)\b.*[\"']({names})[\"']")
    for path in (ROOT / "worker" / "loop.py", ROOT / "worker" / "trainer.py"):
        hits = [
            f"{path.name}:{number}: {line.strip()}"
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if branch.search(line)
        ]
        assert not hits, hits


def test_every_task_has_a_plug_in_with_its_facts():
    from shared.registry import TASKS
    from shared.zoo.task import Task

    for name, info in TASKS.items():
        plugin = info.plugin()
        assert isinstance(plugin, Task) and plugin.name == name
        assert plugin.info is info
