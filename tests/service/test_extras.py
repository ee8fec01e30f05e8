"""What the base install (no extras) runs: every module of the package imports without the
extras' packages, and each command that needs one stops with one line naming the extra, never
an ImportError traceback. The extras' packages are hidden from a real subprocess by a
`sys.meta_path` blocker; scripts/check_dist.sh does the same check for real, in a fresh virtual
environment where the built wheel is installed without them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Packages that only the extras (eval, test) bring. scikit-learn is in the `eval` extra too,
# but the base install has it already (sentence-transformers needs it); hiding it as well
# stands for an environment a platform team trimmed.
EXTRA_ONLY = ("jiwer", "pytest", "hypothesis", "jsonschema", "playwright", "build", "mypy")
BLOCKER = """
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):  # nothing of them may come in through an earlier import
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
"""


def base_python(code: str, *args: str, hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `code` in a Python that cannot import the extras' packages (nor those of `hide`)."""
    blocked = f"BLOCKED = {set(EXTRA_ONLY + hide)!r}\n"
    return subprocess.run([sys.executable, "-c", blocked + BLOCKER + textwrap.dedent(code),
                           *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_the_blocker_really_hides_the_extras() -> None:
    done = base_python("import jiwer")
    assert done.returncode == 1 and "No module named 'jiwer'" in done.stderr
    done = base_python("import sklearn.metrics", hide=("sklearn",))
    assert done.returncode == 1 and "No module named 'sklearn'" in done.stderr


def test_every_module_imports_with_the_base_install_only() -> None:
    done = base_python("""
        import importlib, pkgutil
        failed = []
        for package in ("pipelines", "worker", "service"):
            root = importlib.import_module(package)
            for found in pkgutil.walk_packages(root.__path__, package + "."):
                if ".migrations" in found.name:
                    continue  # Alembic runs these itself, inside its migration context
                try:
                    importlib.import_module(found.name)
                except Exception as exc:
                    failed.append(f"{found.name}: {type(exc).__name__}: {exc}")
        print("\\n".join(failed) or "all imported")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "all imported"


def test_every_command_shows_its_help_with_the_base_install_only() -> None:
    done = base_python("""
        import argparse
        from service.cli import build_parser

        def paths(parser, prefix=()):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        yield from paths(sub, prefix + (name,))
            yield prefix

        shown = 0
        for path in paths(build_parser()):
            try:
                build_parser().parse_args([*path, "--help"])
            except SystemExit as exit:
                assert exit.code == 0, path
                shown += 1
        print("shown", shown)
    """)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 20  # every subcommand, nested ones too


@pytest.mark.parametrize(("command", "package"), [
    (["eval", "speech", "DIR"], "jiwer"),
    (["eval", "text", "DIR/lines.csv"], "scikit-learn"),
    (["eval", "videos", "DIR"], "scikit-learn"),
])
def test_eval_commands_name_the_extra_they_need_in_one_line(
        command: list[str], package: str, tmp_path: Path) -> None:
    (tmp_path / "lines.csv").write_text("text,label\nI will find you,1\n", encoding="utf-8")
    args = [a.replace("DIR", str(tmp_path)) for a in command]
    done = base_python("""
        import sys
        from service.cli import main
        main(sys.argv[1:])
    """, *args, hide=("sklearn",))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (f"incitescan: incitescan eval {command[1]} needs the Python package "
                        f"{package}, which the base install leaves out: "
                        "pip install 'incitescan[eval]'")


def test_every_eval_command_is_covered() -> None:
    from pipelines.evaluate import EVAL_NEEDS
    from service.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._subparsers._group_actions  # type: ignore[union-attr]
                       if a.dest == "command").choices["eval"]
    kinds = next(a for a in subcommands._actions if a.dest == "eval_kind").choices
    assert set(kinds) == set(EVAL_NEEDS)
