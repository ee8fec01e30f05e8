"""`incitescan doctor`: checks everything a scan and the service need on this machine (ffmpeg
and ffprobe with their versions, Chromaprint's fpcalc, each default model file against its
sha256, the Python extras of the eval commands, Redis and the database when configured, free
disk in the media storage, Chromium for the UI tests) and prints one line per check with the
fix for each that fails.

A check is `ok`, `warn` (an optional part is missing: scans run without it, and their reports
say so), `off` (not configured) or `FAIL` (something required is missing: scans or the service
would fail). Parts named in `--require` / INCITESCAN_REQUIRE are required. `incitescan doctor`
exits 1 when any check fails, else 0. Nothing heavy is imported: no model is loaded."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

OK, WARN, OFF, FAIL = "ok", "warn", "off", "FAIL"
APT = "apt-get install"
FREE_DISK_FAIL = 1 * 1024**3  # below this an upload of the default maximum size cannot land
FREE_DISK_WARN = 10 * 1024**3
PROBE_TIMEOUT_S = 3.0  # each network check (Redis, database) gives up after this
# Python packages only some commands import: module -> (distribution, extra, who needs it).
EXTRAS = {
    "jiwer": ("jiwer", "eval", "incitescan eval speech"),
    "sklearn": ("scikit-learn", "eval", "incitescan eval text / videos"),
}


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: its state, what was found, and how to fix it."""

    name: str
    state: str  # ok, warn, off, FAIL
    detail: str
    fix: str = ""


def _version(binary: str, flag: str = "-version") -> str | None:
    """The first line of `binary flag`, or None when it is not installed or does not run."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        done = subprocess.run([path, flag], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else f"{path} (no version printed)"


def check_program(binary: str, package: str, *, required: bool, why: str) -> Check:
    """A program on PATH and its version line."""
    line = _version(binary)
    if line is None:
        return Check(binary, FAIL if required else WARN, f"not found on PATH ({why})",
                     f"{APT} {package}")
    match = re.search(r"version\s+(\S+)", line)
    return Check(binary, OK, f"{match.group(1) if match else line} at {shutil.which(binary)}")


def check_models(require: Iterable[str]) -> list[Check]:
    """Each default model of the manifest: present and matching its sha256."""
    from pipelines.weights import load_manifest, status

    required = set(require)
    manifest = load_manifest()
    checks = []
    for row in status():
        if not row.default:
            continue
        part = "speech" if row.role == "speech" else "detectors"
        first = manifest[row.name].files[0]
        if row.state == "ok":
            checks.append(Check(f"model {row.ref}", OK, f"{first.name} sha256 "
                                f"{first.sha256[:12]}…; {row.detail}"))
            continue
        state = FAIL if part in required else WARN
        effect = ("scans run without it" if state == WARN
                  else f"required (--require {part}): scans fail")
        checks.append(Check(f"model {row.ref}", state, f"{row.state}: {row.detail} ({effect})",
                            f"incitescan weights fetch {row.name}"))
    if checks and all(c.state != OK for c in checks):  # no model left: no scan at all
        checks = [Check(c.name, FAIL, c.detail.replace("scans run without it",
                                                       "no model left: scans fail"), c.fix)
                  for c in checks]
    return checks


def check_extras() -> list[Check]:
    """Python packages of the extras (`pip install 'incitescan[eval]'`)."""
    checks = []
    for module, (package, extra, who) in EXTRAS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        checks.append(Check(f"python {package}", OK, f"installed (for {who})") if found else
                      Check(f"python {package}", WARN, f"not installed: {who} stops",
                            f"pip install 'incitescan[{extra}]'"))
    return checks


def check_redis(url: str | None) -> Check:
    """The broker, when one is configured (INCITESCAN_BROKER_URL)."""
    if not url:
        return Check("redis", OFF, "INCITESCAN_BROKER_URL not set: the service scans in a local "
                     "process pool")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S,
                             socket_connect_timeout=PROBE_TIMEOUT_S).ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return Check("redis", FAIL, f"{_safe_url(url)} unreachable: {exc}",
                     "start Redis (redis-server) or fix INCITESCAN_BROKER_URL")
    return Check("redis", OK, f"{_safe_url(url)} answers")


def check_database(url: str) -> Check:
    """The service's database: PostgreSQL answers; SQLite's folder is writable."""
    if url.startswith("sqlite"):
        target = Path(url.split(":///", 1)[-1]).expanduser()
        folder = _existing_parent(target.parent)
        if not os.access(folder, os.W_OK):
            return Check("database", FAIL, f"SQLite {target}: {folder} is not writable",
                         "set INCITESCAN_DATABASE_URL to a writable place")
        return Check("database", OK, f"SQLite {target}")
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    args = {"connect_timeout": int(PROBE_TIMEOUT_S)} if url.startswith("postgres") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        return Check("database", FAIL, f"{_safe_url(url)} unreachable: {first}",
                     "start PostgreSQL or fix INCITESCAN_DATABASE_URL")
    finally:
        engine.dispose()
    return Check("database", OK, f"{_safe_url(url)} answers")


def check_disk(storage: Path) -> Check:
    """Free space where uploads and evidence go (INCITESCAN_STORAGE)."""
    folder = _existing_parent(storage)
    free = shutil.disk_usage(folder).free
    detail = f"{free / 1024**3:.1f} GiB free at {storage}"
    if free < FREE_DISK_FAIL:
        return Check("storage disk", FAIL, detail, "free disk space or move INCITESCAN_STORAGE")
    if free < FREE_DISK_WARN:
        return Check("storage disk", WARN, detail + " (under 10 GiB)",
                     "free disk space or move INCITESCAN_STORAGE")
    return Check("storage disk", OK, detail)


def check_chromium() -> Check:
    """The system Chromium that the reviewer UI's end-to-end tests drive."""
    binary = next((b for b in ("/usr/bin/chromium", "chromium", "chromium-browser")
                   if shutil.which(b)), None)
    line = _version(binary, "--version") if binary else None
    if line is None:
        return Check("chromium", WARN, "not found (only the UI tests need it)", f"{APT} chromium")
    return Check("chromium", OK, line)


def _existing_parent(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _safe_url(url: str) -> str:
    """`url` without its password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def _guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an unexpected failure is a FAIL line, never a traceback."""
    try:
        found = check()
    except Exception as exc:  # noqa: BLE001 - the doctor reports whatever breaks
        return [Check(name, FAIL, f"{type(exc).__name__}: {exc}")]
    return found if isinstance(found, list) else [found]


def run_checks(require: Iterable[str] = ()) -> list[Check]:
    """Every check, in the order they are printed."""
    from pydantic import ValidationError

    from pipelines.report import scanner_version

    required = tuple(require)
    checks = [Check("python", OK, f"{sys.version.split()[0]}, incitescan {scanner_version()}")]
    checks += _guarded("ffmpeg", lambda: check_program(
        "ffmpeg", "ffmpeg", required=True, why="decodes every video"))
    checks += _guarded("ffprobe", lambda: check_program(
        "ffprobe", "ffmpeg", required=True, why="reads every video"))
    checks += _guarded("fpcalc", lambda: check_program(
        "fpcalc", "libchromaprint-tools", required="fingerprint" in required,
        why="audio fingerprints for re-upload matching; without it matching uses frames only"))
    checks += _guarded("models", lambda: check_models(required))
    checks += _guarded("python extras", check_extras)
    try:
        from service.settings import ServiceSettings

        settings = ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "_".join(str(part) for part in first["loc"]).upper()
        checks.append(Check("settings", FAIL, f"INCITESCAN_{name}: {first['msg']}",
                            f"fix INCITESCAN_{name}"))
        return checks + _guarded("chromium", check_chromium)
    checks += _guarded("redis", lambda: check_redis(settings.broker_url))
    checks += _guarded("database", lambda: check_database(settings.database_url))
    checks += _guarded("storage disk", lambda: check_disk(settings.storage))
    checks += _guarded("chromium", check_chromium)
    return checks


def print_report(checks: list[Check], console: Console, as_json: bool = False) -> int:
    """Print `checks` as a table (or JSON) on `console`; returns the exit code."""
    import json

    from rich.markup import escape
    from rich.table import Table

    failed = [c for c in checks if c.state == FAIL]
    if as_json:
        sys.stdout.write(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]},
                                    indent=1) + "\n")
        return 1 if failed else 0
    styles = {OK: "green", WARN: "yellow", OFF: "dim", FAIL: "bold red"}
    # A log (install.sh, CI) is not 80 columns wide: paths and fixes stay on one line there.
    table = Table(title="incitescan doctor", title_justify="left",
                  width=None if console.is_terminal else 120)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("found", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in checks:
        table.add_row(escape(check.name), f"[{styles[check.state]}]{check.state}[/]",
                      escape(check.detail), escape(check.fix))
    console.print(table)
    warned = sum(c.state == WARN for c in checks)
    console.print(
        f"{len(failed)} required check(s) failed: scans or the service cannot run"
        if failed else "everything required is present"
        + (f"; {warned} optional part(s) missing (scans run without them)" if warned else ""),
        markup=False, highlight=False)
    return 1 if failed else 0
