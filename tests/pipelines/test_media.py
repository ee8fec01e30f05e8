"""Probing, frame sampling and audio extraction with the real ffmpeg on the sample clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import InvalidMedia, MediaTooLarge, UnsupportedMedia
from pipelines.media import AUDIO_RATE, MediaLimits, extract_audio, frame_size, probe, sample_frames


def test_probe_reads_the_sample(threat_knife_video: Path, sample_labels: dict) -> None:
    info = probe(threat_knife_video)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.video_codec == "h264"
    assert info.width > info.height > 0
    assert len(info.sha256) == 64
    assert info.path == str(threat_knife_video)
    spoken_until = max(end for _, end in sample_labels["threat_knife.mp4"]["threat_speech"])
    assert info.duration > spoken_until


def test_frames_are_sampled_at_the_requested_rate(threat_knife_video: Path) -> None:
    info = probe(threat_knife_video)
    frames = list(sample_frames(info, fps=2.0, max_side=320))
    assert len(frames) == pytest.approx(info.duration * 2, abs=1.5)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[1].t == 0.5 and frames[-1].t < info.duration
    width, height = frame_size(info, 320)
    assert max(width, height) == 320
    assert all(f.image.shape == (height, width, 3) and f.image.dtype == np.uint8 for f in frames)


def test_frames_are_never_upscaled(threat_knife_video: Path) -> None:
    info = probe(threat_knife_video)
    assert frame_size(info, 4000) == (info.width, info.height)


def test_frame_content_changes_with_the_shown_image(threat_knife_video: Path,
                                                    sample_labels: dict) -> None:
    """The clip shows still images in turn: frames inside one shot match, across shots differ."""
    info = probe(threat_knife_video)
    frames = list(sample_frames(info, fps=1.0))
    start, end = sample_labels["threat_knife.mp4"]["weapon"][0]
    before = frames[int(start) - 2].image.astype(int)
    inside = frames[int(start) + 1].image.astype(int)
    assert np.abs(before - inside).mean() > 10


def test_audio_is_16khz_mono_of_the_whole_clip(threat_knife_video: Path) -> None:
    info = probe(threat_knife_video)
    audio = extract_audio(info)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size / AUDIO_RATE == pytest.approx(info.duration, abs=0.2)
    assert 0.01 < np.abs(audio).max() <= 1.0


def test_a_video_without_audio_gives_empty_audio(weapon_silent_video: Path) -> None:
    info = probe(weapon_silent_video)
    assert not info.has_audio
    assert extract_audio(info).size == 0


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (b"", InvalidMedia, "empty"),
        (bytes(range(256)) * 64, InvalidMedia, "not a readable video"),
        (b"just some text, not a video\n" * 20, InvalidMedia, "not a readable video"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, content: bytes, error: type,
                                             words: str) -> None:
    bad = tmp_path / "upload.mp4"
    bad.write_bytes(content)
    with pytest.raises(error, match=words):
        probe(bad)


def test_mp4_without_its_moov_index_is_refused(tmp_path: Path, threat_knife_video: Path) -> None:
    data = threat_knife_video.read_bytes()
    moov = data.index(b"moov") - 4
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:moov] + data[moov + int.from_bytes(data[moov:moov + 4], "big"):]
                    if moov < len(data) // 2 else data[:moov])
    with pytest.raises(InvalidMedia, match="cut.mp4"):
        probe(cut)


def test_mp4_cut_short_is_refused_while_decoding(tmp_path: Path,
                                                 threat_knife_video: Path) -> None:
    data = threat_knife_video.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "samples are written with +faststart"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 4])
    info = probe(cut)  # the index still claims the whole duration
    with pytest.raises(InvalidMedia, match="truncated or corrupt"):
        list(sample_frames(info, fps=1.0))


def test_audio_only_file_is_unsupported(tmp_path: Path, threat_knife_video: Path) -> None:
    import subprocess

    audio_only = tmp_path / "speech.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(threat_knife_video), "-vn", "-c:a", "copy",
                    str(audio_only)], check=True)
    with pytest.raises(UnsupportedMedia, match="no video stream"):
        probe(audio_only)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "http://127.0.0.1:9/x.ts"])
def test_playlists_pointing_elsewhere_are_refused(tmp_path: Path, target: str) -> None:
    playlist = tmp_path / "evil.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\n{target}\n"
                        "#EXT-X-ENDLIST\n")
    with pytest.raises(InvalidMedia):
        probe(playlist)


def test_concat_list_pointing_elsewhere_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "evil.mp4"
    listing.write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    with pytest.raises(InvalidMedia):
        probe(listing)


def test_limits_refuse_before_decoding(threat_knife_video: Path) -> None:
    with pytest.raises(MediaTooLarge, match="limit"):
        probe(threat_knife_video, MediaLimits(max_duration=5.0))
    with pytest.raises(MediaTooLarge, match="limit"):
        probe(threat_knife_video, MediaLimits(max_bytes=1000))
    with pytest.raises(MediaTooLarge, match="resolution"):
        probe(threat_knife_video, MediaLimits(max_pixels=100 * 100))


def test_names_that_look_like_options_or_urls_are_plain_files(tmp_path: Path,
                                                              threat_knife_video: Path) -> None:
    odd = tmp_path / "-i http:" / "ü $(rm -rf) ;x.mp4"
    odd.parent.mkdir()
    odd.write_bytes(threat_knife_video.read_bytes())
    info = probe(odd)
    assert info.sha256 == probe(threat_knife_video).sha256
    assert json.dumps(info.path)  # stays a plain string


@pytest.mark.parametrize(("seconds", "fps"), [(0.1, 1.0), (0.4, 1.0), (0.3, 2.0)])
def test_a_video_shorter_than_one_sample_interval_gives_its_first_frame(
        tmp_path: Path, seconds: float, fps: float) -> None:
    import subprocess

    video = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:size=64x48:rate=25",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", str(video)], check=True)
    frames = list(sample_frames(probe(video), fps))  # the fps filter used to give none
    assert [f.index for f in frames] == [0] and frames[0].t == 0.0
    assert frames[0].image[..., 2].mean() > 200  # red (BGR)
