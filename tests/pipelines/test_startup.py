"""What a scan loads, and how (issue 26): nothing the video will not use, OpenVINO's compiled
model from the weights cache, the service's libraries never imported by the CLI's scan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines import ScanOptions, scan
from pipelines.scan import load_models, needs_speech
from pipelines.types import Frame

from .conftest import require_model

SCAN = sys.modules["pipelines.scan"]  # `pipelines.scan` the name is the function


def refuse(*_: object, **__: object) -> None:
    raise AssertionError("loaded a model the scan does not use")


def test_a_silent_video_loads_no_speech_model(monkeypatch, weapon_silent_video: Path) -> None:
    monkeypatch.setattr(SCAN, "build_transcriber", refuse)
    monkeypatch.setattr(SCAN, "warm_text_model", refuse)
    options = ScanOptions(detectors=())
    result = scan(weapon_silent_video, options)
    assert result.transcript is None
    assert result.models["speech"].startswith("whisper-base@")  # named as before, not loaded
    assert load_models(options, speech=False).transcriber is None


def test_needs_speech_only_for_audio_and_a_speech_model(
        weapon_silent_video: Path, threat_knife_video: Path, tmp_path: Path) -> None:
    options = ScanOptions()
    assert needs_speech([weapon_silent_video, threat_knife_video], options)
    assert not needs_speech([weapon_silent_video], options)
    assert not needs_speech([tmp_path / "missing.mp4"], options)  # its scan says why
    assert not needs_speech([threat_knife_video], ScanOptions(speech_model=""))


def test_unknown_speech_model_fails_before_anything_loads(monkeypatch) -> None:
    monkeypatch.setattr(SCAN, "build_detector", refuse)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_models(ScanOptions(speech_model="nope"))


def test_openvino_compiles_once_into_the_weights_cache(monkeypatch, manifest, tmp_path: Path
                                                       ) -> None:
    """The first load writes the compiled model to the cache; the next reads it, and detects
    exactly the same; the thread limit holds either way and `openvino.Core` is left as found."""
    import openvino as ov

    from pipelines import vision

    require_model("yolo11n-coco-int8")
    monkeypatch.setattr(vision, "openvino_cache_dir", lambda: tmp_path)
    plain = ov.Core
    spec = manifest["yolo11n-coco-int8"]
    first = vision.build_detector(spec, vision.DetectorOptions(threads=1))
    blobs = sorted(p.name for p in tmp_path.iterdir())
    assert blobs and all(name.endswith(".blob") for name in blobs)
    second = vision.build_detector(spec, vision.DetectorOptions(threads=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == blobs  # read, not compiled again
    for detector in (first, second):
        compiled = detector._model.predictor.model.backend.ov_compiled_model  # type: ignore
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert ov.Core is plain
    image = np.full((360, 640, 3), 127, np.uint8)
    frame = Frame(t=0.0, index=0, image=image)
    assert first.detect([frame], 1.0) == second.detect([frame], 1.0)


def test_openvino_cache_lives_in_the_weights_cache(monkeypatch, tmp_path: Path) -> None:
    from pipelines import vision

    monkeypatch.setenv("INCITESCAN_WEIGHTS_DIR", str(tmp_path / "weights"))
    assert vision.openvino_cache_dir() == tmp_path / "weights" / vision.OPENVINO_CACHE
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("INCITESCAN_WEIGHTS_DIR", str(tmp_path / "file"))
    assert vision.openvino_cache_dir() is None  # compiled every time, never a crash


def test_the_cli_imports_no_model_runtime_or_service_library(repo_root: Path) -> None:
    """`incitescan scan` pays for torch, ultralytics and Whisper when it loads models, and never
    for the broker, database or settings libraries of the service."""
    code = ("import sys, service.cli; print(' '.join(sorted(m for m in ('torch', 'ultralytics', "
            "'faster_whisper', 'sentence_transformers', 'redis', 'kombu', 'pydantic', "
            "'sqlalchemy', 'celery') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == ""



def test_a_one_shot_scan_loads_the_text_model_while_it_scans(
        monkeypatch, threat_speech_only_video: Path) -> None:
    """`text_later`: load_models returns before the text model is loaded; the scan waits for it
    only before the language analysis, and still finds the spoken threats."""
    import threading

    require_model("whisper-base")
    release = threading.Event()
    real_warm = SCAN.warm_text_model

    def slow_warm() -> None:
        assert release.wait(120)
        real_warm()

    monkeypatch.setattr(SCAN, "warm_text_model", slow_warm)
    options = ScanOptions(detectors=())
    models = load_models(options, text_later=True)
    assert models.text_loading is not None and not models.text_loading.done()
    release.set()
    result = scan(threat_speech_only_video, options, models=models)
    assert models.text_loading.done() and "wait_text_model" in result.timings
    assert result.threat_hits
