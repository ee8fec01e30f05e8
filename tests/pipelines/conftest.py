"""Fixtures for real models: each is loaded once per test session. Without the weights a test
skips, unless INCITESCAN_REQUIRE_WEIGHTS is set (CI sets it), where a missing model fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.errors import WeightsMissing
from pipelines.weights import load_manifest, model_path


def require_model(name: str) -> Path:
    """The verified folder of model `name`, or skip/fail as the module docstring says."""
    try:
        return model_path(name)
    except WeightsMissing as exc:
        if os.environ.get("INCITESCAN_REQUIRE_WEIGHTS"):
            pytest.fail(f"weights required: {exc.message}")
        pytest.skip(exc.message)


@pytest.fixture(scope="session")
def manifest():
    """The project's weights manifest."""
    return load_manifest()


@pytest.fixture(scope="session")
def coco_detector(manifest):
    """YOLO11n COCO INT8 (OpenVINO): persons, knives, bats, phones."""
    from pipelines.vision import build_detector

    require_model("yolo11n-coco-int8")
    return build_detector(manifest["yolo11n-coco-int8"])


@pytest.fixture(scope="session")
def firearm_detector(manifest):
    """basegun's firearm model: finds guns that are large in the frame."""
    from pipelines.vision import build_detector

    require_model("basegun-firearm")
    return build_detector(manifest["basegun-firearm"])


@pytest.fixture(scope="session")
def scan_models():
    """The default scan models (both detectors and Whisper base), loaded once."""
    from pipelines.scan import ScanOptions, load_models

    options = ScanOptions()
    for name in (*options.detectors, options.speech_model_name):
        require_model(name)
    return load_models(options)


@pytest.fixture(scope="session")
def base_transcriber(manifest):
    """Whisper base (multilingual) through faster-whisper, int8 on the CPU."""
    from pipelines.speech import build_transcriber

    require_model("whisper-base")
    return build_transcriber(manifest["whisper-base"])
