"""Odd and hostile videos, built here with the real ffmpeg (each a few KB, one or a few seconds):
other codecs (VP9, AV1, HEVC), variable frame rate and rotation metadata must give the right
frames; headers declaring 10 hours, 0 fps or 16000x16000 pixels are refused by the limits before
anything is decoded; timestamps running past the declared duration, a decompression bomb, a
decoder that stalls and one that spins are stopped by the decode limits with a clear error.
The colour-quadrant clips make "the right frames" checkable: each quadrant has its own colour."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipelines import media
from pipelines.errors import DecodeLimitExceeded, InvalidMedia, MediaTooLarge
from pipelines.media import MediaLimits, extract_audio, probe, sample_frames

# Blue-green-red, as the frames come back; top-left, top-right, bottom-left, bottom-right.
RED, GREEN, BLUE, WHITE = (0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255)
WIDTH, HEIGHT = 160, 96


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    """Run the real ffmpeg (quiet, overwriting)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], input=stdin, check=True,
                   capture_output=True)


def quadrants(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A BGR picture: red, green / blue, white quadrants."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = RED
    image[: height // 2, width // 2:] = GREEN
    image[height // 2:, : width // 2] = BLUE
    image[height // 2:, width // 2:] = WHITE
    return image


def corner_colours(image: np.ndarray) -> list[tuple[int, ...]]:
    """The colour at the centre of each quadrant (top-left, top-right, bottom-left, -right)."""
    h, w = image.shape[:2]
    return [tuple(int(v) for v in image[y, x])
            for y, x in ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4),
                         (3 * h // 4, 3 * w // 4))]


def assert_colours(image: np.ndarray, expected: np.ndarray, tolerance: int = 40) -> None:
    got, want = corner_colours(image), corner_colours(expected)
    assert all(abs(a - b) <= tolerance for g, e in zip(got, want, strict=True)
               for a, b in zip(g, e, strict=True)), (got, want)


def encode_quadrants(target: Path, *codec: str, seconds: int = 2, rate: int = 10) -> Path:
    """`seconds` of the quadrant picture at `rate` fps, encoded with `codec` arguments."""
    frames = quadrants().tobytes() * (seconds * rate)
    ffmpeg("-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(rate),
           "-i", "pipe:0", *codec, "-pix_fmt", "yuv420p", str(target), stdin=frames)
    return target


def encoders() -> str:
    return subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                          text=True, check=True).stdout


def av1_encoder() -> list[str]:
    """Arguments of the fastest AV1 encoder this ffmpeg has (skip when it has none)."""
    available = encoders()
    for name, args in (("libsvtav1", ["-preset", "12"]),
                       ("libaom-av1", ["-cpu-used", "8", "-usage", "realtime"]),
                       ("librav1e", ["-speed", "10"])):
        if f" {name} " in available:
            return ["-c:v", name, *args]
    pytest.skip("this ffmpeg has no AV1 encoder (libsvtav1, libaom-av1, librav1e)")


CODECS: dict[str, tuple[str, Callable[[], list[str]], str]] = {
    "vp9": ("clip.webm", lambda: ["-c:v", "libvpx-vp9", "-deadline", "realtime",
                                  "-cpu-used", "8"], "vp9"),
    "av1": ("clip.mkv", av1_encoder, "av1"),
    "hevc": ("clip.mp4", lambda: ["-c:v", "libx265", "-preset", "ultrafast",
                                  "-x265-params", "log-level=none"], "hevc"),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_other_codecs_give_the_right_frames(tmp_path: Path, codec: str) -> None:
    name, arguments, codec_name = CODECS[codec]
    video = encode_quadrants(tmp_path / name, *arguments())
    info = probe(video)
    assert (info.video_codec, info.width, info.height) == (codec_name, WIDTH, HEIGHT)
    assert info.duration == pytest.approx(2.0, abs=0.1) and info.fps == pytest.approx(10)
    frames = list(sample_frames(info, fps=2.0, max_side=80))
    assert [f.t for f in frames] == [0.0, 0.5, 1.0, 1.5]
    for frame in frames:
        assert frame.image.shape == (48, 80, 3)
        assert_colours(frame.image, quadrants(80, 48))


@pytest.mark.parametrize(("tag", "turns"), [(90, 1), (180, 2), (270, -1)])
def test_rotated_video_comes_out_upright(tmp_path: Path, tag: int, turns: int) -> None:
    """A phone video stores landscape pixels plus a display matrix; players show the picture
    turned by the matrix (counter-clockwise by ffprobe's `rotation` angle), and so must the
    frames the detector sees, with width and height swapped for a quarter turn."""
    plain = encode_quadrants(tmp_path / "plain.mp4", "-c:v", "libx264")
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={tag}", str(rotated))
    info = probe(rotated)
    upright = np.ascontiguousarray(np.rot90(quadrants(), turns))
    assert info.rotation == {1: 90, 2: 180, -1: 270}[turns]
    assert (info.width, info.height) == (upright.shape[1], upright.shape[0])
    frames = list(sample_frames(info, fps=2.0))
    assert len(frames) == 4
    for frame in frames:
        assert frame.image.shape == upright.shape
        assert_colours(frame.image, upright)
    # A chunk decoded after a seek is turned the same way.
    later = list(sample_frames(info, fps=2.0, first=2))
    assert [f.index for f in later] == [2, 3]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(later, frames[2:], strict=True))


def test_variable_frame_rate_frames_come_from_their_timestamps(tmp_path: Path) -> None:
    """Three paces in one file: 10 fps for 1 s, 2 fps for 2 s, 25 fps for 1 s; each source
    frame has its own grey level. A sample at time t must show the frame on screen at t (the
    fps filter takes the last frame starting before t + half a sampling period), which a
    decoder that assumed the average frame rate would get wrong from 1 s on."""
    times = [i / 10 for i in range(10)] + [1.0 + i / 2 for i in range(4)] + \
        [3.0 + i / 25 for i in range(25)]
    levels = [10 + 5 * i for i in range(len(times))]
    frames = b"".join(np.full((48, 64, 3), level, np.uint8).tobytes() for level in levels)
    pts = "if(lt(N,10),N*0.1,if(lt(N,14),1.0+(N-10)*0.5,3.0+(N-14)*0.04))/TB"
    video = tmp_path / "vfr.mp4"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "64x48", "-r", "25", "-i", "pipe:0",
           "-vf", f"settb=1/1000,setpts='{pts}'", "-fps_mode", "vfr", "-enc_time_base",
           "1/1000", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(video),
           stdin=frames)
    info = probe(video)
    assert info.duration == pytest.approx(4.0, abs=0.05)
    assert info.fps == pytest.approx(len(times) / 4.0, abs=0.1)  # the average, not any pace
    sampled = list(sample_frames(info, fps=4.0, max_side=64))
    assert [f.t for f in sampled] == [i / 4 for i in range(16)]
    for frame in sampled:
        shown = max(i for i, t in enumerate(times) if t <= frame.t + 0.125)
        assert abs(int(frame.image[24, 32, 0]) - levels[shown]) <= 3, (frame.t, levels[shown])


# ------------------------------------------------------------------- refused before decoding


@pytest.fixture
def no_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the scanner's ffmpeg at a stand-in that records any call: a refusal "before
    decoding" must leave the returned marker file absent (ffprobe stays the real one)."""
    marker = tmp_path / "ffmpeg-was-called"
    stand_in = tmp_path / "ffmpeg"
    stand_in.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("INCITESCAN_FFMPEG", str(stand_in))
    return marker


def png_bomb(width: int, height: int, colour: int = 0) -> bytes:
    """An 8-bit PNG of zeros (colour type 0 grey, 2 RGB): kilobytes on disk, `width * height`
    pixels decoded. Built fast: one compressed block of rows, repeated (a full flush makes each
    block's deflate output the same), with the checksum of the whole."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = 50
    assert height % rows == 0
    block = bytes(1 + width * {0: 1, 2: 3}[colour]) * rows
    packer = zlib.compressobj(9)
    first = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    assert first[2:] == again  # the same bytes after the 2-byte zlib header
    checksum = 1
    for _ in range(height // rows):
        checksum = zlib.adler32(block, checksum)
    stream = (first + again * (height // rows - 1) + packer.flush()[:-4]
              + struct.pack(">I", checksum))
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream)
            + chunk(b"IEND", b""))


def png_in_matroska(tmp_path: Path, png: bytes, name: str) -> Path:
    """`png` as the single frame of a Matroska video (a codec every ffmpeg decodes)."""
    source, video = tmp_path / f"{name}.png", tmp_path / name
    source.write_bytes(png)
    ffmpeg("-f", "png_pipe", "-i", str(source), "-c", "copy", "-f", "matroska", str(video))
    return video


def test_ten_hour_duration_is_refused_before_decoding(tmp_path: Path, no_decoding: Path
                                                      ) -> None:
    video = tmp_path / "ten_hours.mp4"  # two frames, 10 h apart: 3 KB
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "2", "-vf",
           "settb=1/1000,setpts=N*36000/TB", "-fps_mode", "vfr", "-enc_time_base", "1/1000",
           "-c:v", "libx264", str(video))
    assert video.stat().st_size < 10_000
    with pytest.raises(MediaTooLarge, match=r"ten_hours.mp4: 600\.\d min is over the 180 min"):
        probe(video)
    assert not no_decoding.exists()


def test_absurd_resolution_is_refused_before_decoding(tmp_path: Path, no_decoding: Path
                                                      ) -> None:
    video = png_in_matroska(tmp_path, png_bomb(16000, 16000), "huge.mkv")  # 250 KB
    assert video.stat().st_size < 300_000
    with pytest.raises(MediaTooLarge, match="16000x16000 is over the resolution limit"):
        probe(video)
    assert not no_decoding.exists()


def _ivf_with_zero_rate(tmp_path: Path) -> Path:
    video = tmp_path / "zero.ivf"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-t", "1", "-c:v", "libvpx-vp9",
           "-deadline", "realtime", str(video))
    header = bytearray(video.read_bytes())
    struct.pack_into("<II", header, 16, 0, 1)  # frame rate 0/1 in the IVF header
    video.write_bytes(header)
    return video


def _mp4_with_zero_timescale(tmp_path: Path) -> Path:
    video = tmp_path / "zero.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "10",
           "-c:v", "libx264", str(video))
    data = bytearray(video.read_bytes())
    mdhd = data.index(b"mdhd")
    assert data[mdhd + 4] == 0  # version 0: the time scale sits after two 32-bit times
    struct.pack_into(">I", data, mdhd + 16, 0)
    video.write_bytes(data)
    return video


@pytest.mark.parametrize("make", [_ivf_with_zero_rate, _mp4_with_zero_timescale],
                         ids=["ivf-rate-0", "mp4-timescale-0"])
def test_zero_frame_rate_is_refused_before_decoding(tmp_path: Path, no_decoding: Path,
                                                    make: Callable[[Path], Path]) -> None:
    video = make(tmp_path)
    with pytest.raises(InvalidMedia, match=f"{video.name}: .*(frame rate|Invalid)"):
        probe(video)
    assert not no_decoding.exists()


# --------------------------------------------------------------------- stopped while decoding


def test_timestamps_past_the_declared_duration_are_not_decoded(tmp_path: Path) -> None:
    """3 s at 10 fps, then one frame 10 h later, with every header saying 3 s: the limits
    pass, and the fps filter would emit a frame per second of those 10 hours (36,000 frames
    from 3 KB) if the sampler did not stop at the probed duration."""
    video = tmp_path / "runs_on.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "31", "-vf",
           "settb=1/1000,setpts='if(lt(N,30),N*0.1,36000)/TB'", "-fps_mode", "vfr",
           "-enc_time_base", "1/1000", "-c:v", "libx264", str(video))
    data = bytearray(video.read_bytes())
    for box in (b"mvhd", b"mdhd"):  # duration := time scale (1 s) x 3
        at = data.index(box)
        struct.pack_into(">I", data, at + 20, 3 * struct.unpack(">I", data[at + 16:at + 20])[0])
    tkhd, mvhd = data.index(b"tkhd"), data.index(b"mvhd")
    struct.pack_into(">I", data, tkhd + 24, 3 * struct.unpack(">I", data[mvhd + 16:mvhd + 20])[0])
    video.write_bytes(data)
    info = probe(video)
    assert info.duration == pytest.approx(3.0)
    started = time.monotonic()
    frames = list(sample_frames(info, fps=1.0, max_side=64))
    assert len(frames) <= 4 and time.monotonic() - started < 20


def test_decompression_bomb_is_stopped_by_the_memory_limit(tmp_path: Path,
                                                           threat_knife_video: Path) -> None:
    """A 750 KB file whose one frame decodes to 768 MB of pixels. The resolution limit refuses
    it first (above); with that raised, the memory limit of the decoding child (1 GiB here,
    4 GiB by default) stops it with a clear error, and the same limits still scan an ordinary
    video."""
    bomb = png_in_matroska(tmp_path, png_bomb(16000, 16000, colour=2), "bomb.mkv")
    assert bomb.stat().st_size < 1_000_000
    limits = MediaLimits(max_pixels=16000 * 16000, decode_memory_bytes=2**30)
    info = probe(bomb, limits)
    with pytest.raises(DecodeLimitExceeded, match="bomb.mkv: .*1024 MiB memory limit") as caught:
        list(sample_frames(info, fps=1.0, limits=limits))
    assert caught.value.code == "decode_limit_exceeded" and caught.value.exit_code == 2
    ordinary = probe(threat_knife_video, limits)
    assert len(list(sample_frames(ordinary, fps=0.5, max_side=160, limits=limits))) == 10


def _stand_in_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    script = tmp_path / "ffmpeg"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("INCITESCAN_FFMPEG", str(script))


def test_a_stalled_decoder_is_stopped_by_the_wall_clock_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threat_knife_video: Path) -> None:
    """A decoder that hangs without using CPU (the CPU-time limit never fires) is killed after
    `decode_stall_s` of silence, for frames and for audio."""
    info = probe(threat_knife_video)
    _stand_in_ffmpeg(tmp_path, monkeypatch, "import time\ntime.sleep(600)")
    limits = MediaLimits(decode_stall_s=1.5)
    for decode in (lambda: list(sample_frames(info, fps=1.0, limits=limits)),
                   lambda: extract_audio(info, limits=limits)):
        started = time.monotonic()
        with pytest.raises(DecodeLimitExceeded, match="nothing for 1.5 s .*wall-clock"):
            decode()
        assert time.monotonic() - started < 10
    stalled_probe = tmp_path / "ffprobe"
    stalled_probe.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    stalled_probe.chmod(0o755)
    monkeypatch.setenv("INCITESCAN_FFPROBE", str(stalled_probe))
    with pytest.raises(DecodeLimitExceeded, match="probing took over 2 s"):
        probe(threat_knife_video, MediaLimits(probe_timeout=2))


def test_a_spinning_decoder_is_stopped_by_the_cpu_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threat_knife_video: Path) -> None:
    """A decoder burning CPU without output is killed by RLIMIT_CPU (set in the child before
    exec). The budget, normally 60 s + 2x the duration, is cut to 1 s here."""
    info = probe(threat_knife_video)
    _stand_in_ffmpeg(tmp_path, monkeypatch, "while True:\n    pass")
    monkeypatch.setattr(media, "_cpu_budget", lambda info: 1)
    started = time.monotonic()
    with pytest.raises(DecodeLimitExceeded, match="CPU-time limit of 1 s"):
        list(sample_frames(info, fps=1.0, limits=MediaLimits(decode_stall_s=30)))
    assert time.monotonic() - started < 20


# ------------------------------------------------------------------------------- command line


def _incitescan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ})


def test_command_line_refuses_each_hostile_file_in_one_line(tmp_path: Path) -> None:
    """`incitescan scan` on hostile files: one line each naming the file and the problem, exit
    code 2, no traceback (no model is needed to refuse them)."""
    ten_hours = tmp_path / "ten hours; $(x).mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-frames:v", "2", "-vf",
           "settb=1/1000,setpts=N*36000/TB", "-fps_mode", "vfr", "-enc_time_base", "1/1000",
           "-c:v", "libx264", str(ten_hours))
    huge = png_in_matroska(tmp_path, png_bomb(16000, 16000), "huge.mkv")
    zero = _mp4_with_zero_timescale(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    files = [ten_hours, huge, zero, empty]
    done = _incitescan("scan", *map(str, files), "--quiet", "--speech-model", "none")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(files), lines
    for line, video, words in zip(lines, files, ["over the 180 min limit",
                                                 "over the resolution limit",
                                                 "implausible frame rate", "empty"], strict=True):
        assert line.startswith(f"incitescan: {video.name}: ") and words in line, line


@pytest.mark.slow
def test_command_line_scans_odd_but_valid_videos(tmp_path: Path) -> None:
    """VP9, AV1, HEVC, a rotated phone video: `incitescan scan` gives one report each, with the
    displayed size (portrait for the rotated one)."""
    from tests.pipelines.conftest import require_model

    for name in ("yolo11n-coco-int8", "basegun-firearm"):
        require_model(name)
    videos = [encode_quadrants(tmp_path / CODECS[c][0], *CODECS[c][1]()) for c in sorted(CODECS)]
    rotated = tmp_path / "phone video ü.mp4"
    ffmpeg("-i", str(videos[-1]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    report_path = tmp_path / "reports.json"
    done = _incitescan("scan", *map(str, [*videos, rotated]), "--quiet", "--speech-model", "none",
                       "--fps", "2", "--json", str(report_path))
    assert done.returncode == 0, done.stderr
    reports = json.loads(report_path.read_text())
    assert [r["video"]["path"] for r in reports] == [v.name for v in [*videos, rotated]]
    assert [(r["video"]["width"], r["video"]["height"]) for r in reports] == \
        [(WIDTH, HEIGHT)] * 3 + [(HEIGHT, WIDTH)]
    assert [r["frames_sampled"] for r in reports] == [4] * 4
    assert [r["video"]["video_codec"] for r in reports] == ["av1", "hevc", "vp9", "vp9"]
