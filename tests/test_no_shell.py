"""Every subprocess the scanner starts gets an argument list, never a shell command line: no
`shell=True`, no `os.system` / `os.popen`, and the first argument of each `subprocess` call is a
list (so an uploaded file name can never be read by a shell). Checked on the source (AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for package in ("pipelines", "service", "worker", "bench", "samples")
                 for p in (ROOT / package).rglob("*.py"))
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output"}


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_subprocesses_get_argument_lists(path: Path) -> None:
    for call in _calls(path):
        name = _name(call)
        where = f"{path.relative_to(ROOT)}:{call.lineno}"
        assert name not in ("os.system", "os.popen"), f"{where}: {name} runs a shell"
        for keyword in call.keywords:
            if keyword.arg == "shell":
                assert isinstance(keyword.value, ast.Constant) and not keyword.value.value, \
                    f"{where}: shell=True"
        if name.startswith("subprocess.") and name.split(".")[1] in SPAWNERS and call.args:
            assert not (isinstance(call.args[0], ast.Constant)
                        and isinstance(call.args[0].value, str)), \
                f"{where}: a command string; pass an argument list"
            assert not isinstance(call.args[0], ast.JoinedStr), f"{where}: an f-string command"
