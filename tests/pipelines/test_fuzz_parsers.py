"""Property tests (hypothesis) of everything that parses text a user, an uploader or another
process controls, other than the HTTP API (tests/service/test_fuzz.py): the report checker that
guards every report read back (`check_report`), the weights manifest loader (`load_manifest`),
the service settings read from INCITESCAN_* variables (`ServiceSettings`) and the reading of
ffprobe's output, whose tags are the uploader's text (`_frame_rate`, `_rotation`). Each must
accept its input or raise its own clear error (ReportInvalid, ManifestInvalid, pydantic's
ValidationError), never KeyError, TypeError and the like. Inputs are valid documents mutated
(keys dropped, values replaced by other JSON) plus arbitrary JSON and text.

Each target runs a modest number of examples in the default suite and many more under the
`slow` mark; the counts tried are printed (`pytest -s`) and checked."""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipelines.errors import ManifestInvalid, ReportInvalid
from pipelines.media import _frame_rate, _rotation
from pipelines.report import check_report
from pipelines.weights import DEFAULT_MANIFEST, load_manifest
from service.settings import ServiceSettings

DEFAULT_EXAMPLES, SLOW_EXAMPLES = 300, 3000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def mutated(document: Any) -> st.SearchStrategy[Any]:
    """`document` with a few of its values replaced by arbitrary JSON or keys dropped."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(document, ())
    change = st.tuples(st.sampled_from(paths), st.one_of(json_values, st.just(KeyError)))

    def apply(changes: list[tuple[tuple[Any, ...], Any]]) -> Any:
        result = copy.deepcopy(document)
        for path, value in changes:
            if not path:
                return value if value is not KeyError else {}
            parent = result
            try:
                for step in path[:-1]:
                    parent = parent[step]
                if value is KeyError:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change removed that path
        return result

    return st.lists(change, min_size=1, max_size=4).map(apply)


def run_fuzz(examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None],
             name: str) -> int:
    """Run `check` on `examples` inputs drawn from `strategy`; returns how many were tried."""
    tried = 0

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def property_holds(value: Any) -> None:
        nonlocal tried
        tried += 1
        check(value)

    property_holds()
    print(f"\n{name}: {tried} inputs tried")
    assert tried >= examples * 0.9
    return tried


# ----------------------------------------------------------------------------------- reports


def a_report() -> dict[str, Any]:
    """A complete report as a scan writes it (one segment with a detection and a threat hit,
    evidence, a fingerprint)."""
    return {
        "schema_version": "1.0", "scanner": {"name": "incitescan", "version": "0.1.0"},
        "video": {"path": "clip.mp4", "duration": 20.0, "width": 854, "height": 480,
                  "fps": 25.0, "has_audio": True, "sha256": "0" * 64},
        "risk_score": 0.8, "flagged": True, "threshold": 0.5,
        "signal_scores": {"weapon": 0.7, "threat_speech": 0.9, "co_occurrence": 0.8},
        "reasons": ["knife and threat"], "models": {"detector:0": "yolo@1"},
        "settings": {"fps": 1.0}, "frames_sampled": 20,
        "flagged_segments": [{
            "start": 4.0, "end": 8.0, "score": 0.8, "signals": ["weapon", "threat_speech"],
            "reasons": ["a knife", "a threat"],
            "detections": [{"t": 5.0, "label": "knife", "confidence": 0.7,
                            "box": [1.0, 2.0, 3.0, 4.0], "model": "yolo@1",
                            "source_label": "knife", "frame_index": 5}],
            "threat_hits": [{"start": 4.8, "end": 5.5, "text": "I'm going to stab you",
                             "rule": "pattern:x", "category": "threat", "meaning": "threat",
                             "weight": 0.85, "segment_text": "I'm going to stab you"}]}],
        "evidence": [{"t": 5.0, "frame_index": 5, "path": "evidence/x/frame.jpg",
                      "labels": ["knife"]}],
        "fingerprint": {"frames": [{"t": 0.0, "frame_index": 0, "quality": 80,
                                    "pdq": ["ab" * 32] * 5}],
                        "audio": [{"start": 0.0, "item_s": 0.12, "items": [1, 2, 3],
                                   "algorithm": "chromaprint2"}]},
        "transcript": None, "weapon_detections": [], "threat_hits": [],
    }


def readers_accept(report: dict[str, Any]) -> None:
    """What the service reads from a stored report, read the way it reads it."""
    from pipelines.matching import fingerprint_from_report

    float(report["risk_score"]), bool(report["flagged"]), str(report["schema_version"])
    report["video"]["path"] = "renamed.mp4"
    for found in report["flagged_segments"]:
        float(found["start"]), float(found["end"]), float(found["score"])
        list(found["signals"]), list(found["reasons"])
        for det in found.get("detections", []):
            det["t"], det["label"], det["confidence"], det["model"], list(det["box"])
        for hit in found.get("threat_hits", []):
            hit["start"], hit["end"], hit["category"], hit["weight"], hit["rule"], hit["text"]
    for item in report.get("evidence", []):
        int(item["frame_index"]), str(item["path"])
    frames, _ = fingerprint_from_report(report)
    for frame in frames:
        [int(h, 16) for h in frame.pdq]


def check_one_report(value: Any) -> None:
    try:
        report = check_report(value)
    except ReportInvalid as exc:
        assert exc.code == "invalid_report" and exc.message.startswith("report")
        return
    readers_accept(copy.deepcopy(report))


REPORTS = st.one_of(mutated(a_report()), json_values)


def test_the_complete_report_passes() -> None:
    readers_accept(check_report(a_report()))


def test_report_checker_fuzz() -> None:
    run_fuzz(DEFAULT_EXAMPLES, REPORTS, check_one_report, "check_report")


@pytest.mark.slow
def test_report_checker_fuzz_long() -> None:
    run_fuzz(SLOW_EXAMPLES, REPORTS, check_one_report, "check_report (long)")


# ---------------------------------------------------------------------------------- manifest


def toml_text(value: Any) -> str:
    """`value` (a dict) as TOML, by a small writer (tomllib only reads)."""
    lines: list[str] = []

    def scalar(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item) if math.isfinite(item) else ("nan" if item != item else
                                                           ("inf" if item > 0 else "-inf"))
        if isinstance(item, str):
            return '"' + item.encode("unicode_escape").decode().replace('"', '\\"') + '"'
        if isinstance(item, list):
            return "[" + ", ".join(scalar(x) for x in item) + "]"
        if isinstance(item, dict):
            return "{" + ", ".join(f"{scalar(str(k))} = {scalar(v)}" for k, v in item.items()) + "}"
        return '""'  # None has no TOML form

    for key, item in value.items():
        lines.append(f"{scalar(str(key))} = {scalar(item)}")
    return "\n".join(lines) + "\n"


MANIFEST = tomllib.loads(DEFAULT_MANIFEST.read_text(encoding="utf-8"))


def check_one_manifest(tmp_path: Path) -> Callable[[Any], None]:
    target = tmp_path / "manifest.toml"

    def check(value: Any) -> None:
        if isinstance(value, dict):
            target.write_text(toml_text(value), encoding="utf-8")
        elif isinstance(value, bytes):
            target.write_bytes(value)
        else:
            target.write_text(str(value), encoding="utf-8")
        try:
            specs = load_manifest(target)
        except ManifestInvalid as exc:
            assert str(target) in exc.message and exc.code == "manifest_invalid"
            return
        assert specs and all(spec.files and spec.sources for spec in specs.values())

    return check


MANIFESTS = st.one_of(mutated(MANIFEST).filter(lambda m: isinstance(m, dict)),
                      st.text(max_size=200), st.binary(max_size=200))


def test_the_project_manifest_round_trips(tmp_path: Path) -> None:
    check_one_manifest(tmp_path)(MANIFEST)
    assert set(load_manifest(tmp_path / "manifest.toml")) == set(load_manifest())


def test_manifest_loader_fuzz(tmp_path: Path) -> None:
    run_fuzz(DEFAULT_EXAMPLES, MANIFESTS, check_one_manifest(tmp_path), "load_manifest")


@pytest.mark.slow
def test_manifest_loader_fuzz_long(tmp_path: Path) -> None:
    run_fuzz(SLOW_EXAMPLES, MANIFESTS, check_one_manifest(tmp_path), "load_manifest (long)")


# ---------------------------------------------------------------------------------- settings

SETTING_NAMES = sorted(ServiceSettings.model_fields)
GOOD_VALUES = ["1", "0", "-1", "0.5", "1e309", "nan", "true", "none", "base", "tiny.en",
               "sqlite:///x.db", "redis://127.0.0.1:1/0", "/tmp/x", "", " ", "[]", "{}", "null"]
ENVIRONMENTS = st.dictionaries(
    st.sampled_from(SETTING_NAMES).map(lambda name: f"INCITESCAN_{name.upper()}"),
    st.sampled_from(GOOD_VALUES) | st.text(st.characters(blacklist_categories=["Cs"],
                                                         blacklist_characters="\x00"),
                                           max_size=20),
    max_size=5)


def check_one_environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    def check(environment: dict[str, str]) -> None:
        with monkeypatch.context() as patch:
            for name in SETTING_NAMES:
                patch.delenv(f"INCITESCAN_{name.upper()}", raising=False)
            for name, value in environment.items():
                patch.setenv(name, value)
            try:
                loaded = ServiceSettings()
            except ValidationError as exc:
                assert exc.errors(), exc
                return
            loaded.scan_options(), loaded.media_limits()  # usable once accepted

    return check


def test_service_settings_fuzz(monkeypatch: pytest.MonkeyPatch) -> None:
    run_fuzz(DEFAULT_EXAMPLES, ENVIRONMENTS, check_one_environment(monkeypatch),
             "ServiceSettings")


@pytest.mark.slow
def test_service_settings_fuzz_long(monkeypatch: pytest.MonkeyPatch) -> None:
    run_fuzz(SLOW_EXAMPLES, ENVIRONMENTS, check_one_environment(monkeypatch),
             "ServiceSettings (long)")


# --------------------------------------------------------------------------- ffprobe output

STREAMS = st.fixed_dictionaries({}, optional={
    "avg_frame_rate": json_values | st.from_regex(r"-?\d{1,6}/-?\d{1,6}", fullmatch=True),
    "r_frame_rate": json_values | st.from_regex(r"-?\d{1,6}/-?\d{1,6}", fullmatch=True),
    "side_data_list": st.lists(st.dictionaries(st.just("rotation"), json_values) | json_values,
                               max_size=2) | json_values,
    "tags": st.fixed_dictionaries({}, optional={"rotate": json_values}),
})


def check_one_stream(stream: dict[str, Any]) -> None:
    fps = _frame_rate(stream)
    assert fps == 0.0 or (math.isfinite(fps) and fps > 0)
    assert _rotation(stream) in (0, 90, 180, 270)


def test_ffprobe_stream_fields_fuzz() -> None:
    run_fuzz(DEFAULT_EXAMPLES, STREAMS, check_one_stream, "ffprobe stream fields")


# ------------------------------------------------------------------------------ command line


def _incitescan(*args: str, env: dict[str, str]) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_a_broken_manifest_is_one_line_in_the_command_line(tmp_path: Path) -> None:
    broken = tmp_path / "manifest.toml"
    broken.write_text('schema = 1\n[models.x]\nrole = "detector"\nsources = [{kind = []}]\n')
    done = _incitescan("weights", "list", env={"INCITESCAN_MANIFEST": str(broken)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"incitescan: {broken}: model 'x'"), line


def test_a_bad_setting_is_one_line_in_the_command_line(tmp_path: Path) -> None:
    done = _incitescan("keys", "create", "--role", "admin", env={
        "INCITESCAN_FPS": "fast", "INCITESCAN_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("incitescan: invalid setting INCITESCAN_FPS: "), line
    assert not (tmp_path / "k.db").exists()  # refused before anything was created
