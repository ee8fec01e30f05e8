"""Sample fixtures shared by the whole suite: one fixture per clip in ``samples/`` (its docstring
says what the clip holds; ``samples/README.md`` has the full story), the clips' ground truth from
``samples/labels.json``, the repository root, and the development data in ``../shared/data``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = REPO_ROOT / "samples"


def _sample(name: str) -> Path:
    """Path of a committed sample clip; fails (never skips) when it is missing."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.fail(f"sample {path} is missing; regenerate with `python samples/make_samples.py`")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (development images, text, speech); the test
    skips where it is absent, as it is outside the project."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"development data not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_labels() -> dict[str, dict[str, Any]]:
    """Ground truth for every sample clip, keyed by file name: ``weapon`` and ``threat_speech``
    intervals in seconds, ``incitement``, ``description``, ``speech`` lines with times and text,
    plus ``duration``, ``has_audio``, ``music`` and the ``shots`` list."""
    labels: dict[str, dict[str, Any]] = json.loads((SAMPLES_DIR / "labels.json").read_text())
    return labels


@pytest.fixture(scope="session")
def threat_knife_video() -> Path:
    """20 s: a street shot, three knife CCTV/stock frames (4-16 s), a bus; explicit stabbing
    threats spoken at 5, 9 and 13 s, inside the knife interval. No music. Incitement: true."""
    return _sample("threat_knife.mp4")


@pytest.fixture(scope="session")
def threat_gun_drill_video() -> Path:
    """24 s: pistol and rifle photos (0-8 s, 12-24 s) around a man holding up a phone (8-12 s);
    four threats ("grab the skeng...", "wet him up", "spin the block", "we will shoot him")
    over a drill-style beat, then "free the mandem" (not a threat). Incitement: true."""
    return _sample("threat_gun_drill.mp4")


@pytest.fixture(scope="session")
def threat_speech_only_video() -> Path:
    """18 s: bus, two men, a man holding up a phone; no weapon on screen; explicit threats to
    kill, shoot and burn at 4, 9 and 13 s. No music. Incitement: true."""
    return _sample("threat_speech_only.mp4")


@pytest.fixture(scope="session")
def threat_rap_over_beat_video() -> Path:
    """15 s: bus, two men, a man holding up a phone; no weapon on screen; "set fire to their
    area" (1 s) and "pass me the strap, I'm going to shoot him" (4.5 s) rapped over the drill
    beat with a chord pad at 0 dB speech-to-music, then "the gang are going to the studio
    tonight" (not a threat). Incitement: true."""
    return _sample("threat_rap_over_beat.mp4")


@pytest.fixture(scope="session")
def benign_street_video() -> Path:
    """16 s: bus, two men; everyday speech (weather, park, late bus). No weapon, no music.
    Incitement: false."""
    return _sample("benign_street.mp4")


@pytest.fixture(scope="session")
def benign_slang_video() -> Path:
    """18 s: a man holding up a phone / wallet, two men; friendly UK slang ("that ting was peng,
    bless up mandem", "wagwan bruv") over a drill-style beat. Must not flag. Incitement: false."""
    return _sample("benign_slang.mp4")


@pytest.fixture(scope="session")
def music_only_video() -> Path:
    """15 s: bus, a pointing hand gesture, two men; drill-style beat and no speech at all (a
    transcript must come back empty). Incitement: false."""
    return _sample("music_only.mp4")


@pytest.fixture(scope="session")
def weapon_silent_video() -> Path:
    """15 s: pistol on a table, knife held to a CCTV camera, rifle on the floor (weapon on
    screen throughout); no audio stream at all. Incitement: false (weapon evidence only)."""
    return _sample("weapon_silent.mp4")


@pytest.fixture(scope="session")
def kitchen_benign_video() -> Path:
    """20 s: kitchen knives cutting food throughout (knife boxes true); a recipe read aloud
    ("chop", "cut", "slice"). Hard negative. Incitement: false."""
    return _sample("kitchen_benign.mp4")


@pytest.fixture()
def tools_without_fpcalc(tmp_path: Path) -> Path:
    """A folder with links to the real ffmpeg and ffprobe and nothing else (no fpcalc): a PATH
    for a scan on a machine without Chromaprint."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        found = shutil.which(tool)
        assert found, f"{tool} is not installed"
        (folder / tool).symlink_to(found)
    return folder
