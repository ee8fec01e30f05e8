"""Reading untrusted media with ffmpeg: probe and validate a file, stream frames sampled and scaled
by ffmpeg itself (never the whole video in memory), and extract the audio once as 16 kHz mono.

Every ffmpeg/ffprobe call reads one local file only: the path is passed as `file:<absolute path>`
(so a name can never be read as an option or another protocol), the protocol whitelist is `file`
and the demuxer whitelist names ordinary containers, which refuses playlists (HLS, concat) that
could point ffmpeg at other files or URLs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .errors import DecodeLimitExceeded, InvalidMedia, MediaTooLarge, UnsupportedMedia
from .types import Frame, MediaInfo

# Demuxers for ordinary uploads. Notably absent: hls, concat, image2 (globs), and every device.
ALLOWED_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mpegvideo,ogg,wav,mp3,aac,"
    "asf,h264,hevc,ivf,flac,mxf,nut,dv,gif"
)
SAFE_INPUT = ("-protocol_whitelist", "file", "-format_whitelist", ALLOWED_DEMUXERS)
AUDIO_RATE = 16_000
CHUNK_LEAD_S = 2.0  # decoded before the first frame of a chunk (see `sample_frames`)
# Frame rates outside this range are not a real video's: a time scale of 0 in an MP4 header, say,
# gives 1/1024 fps, and the fps filter would then emit a frame per second of a made-up timeline.
MIN_FPS, MAX_FPS = 0.01, 1000.0


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What an upload may be; anything over is refused before decoding."""

    max_bytes: int = 2 * 1024**3
    max_duration: float = 3 * 3600.0
    max_pixels: int = 7680 * 4320
    probe_timeout: float = 30.0
    # Each ffmpeg/ffprobe child's address space (RLIMIT_AS): a decompression bomb (a tiny file of
    # huge frames) fails to allocate instead of taking the machine's memory.
    decode_memory_bytes: int = 4 * 1024**3
    # Wall-clock limit on waiting for ffmpeg: each frame (or block of audio) must arrive within
    # this many seconds, besides the CPU-time limit of 60 s + 2x the duration.
    decode_stall_s: float = 120.0


def _ffmpeg_binary() -> str:
    return os.environ.get("INCITESCAN_FFMPEG", "ffmpeg")


def _ffprobe_binary() -> str:
    return os.environ.get("INCITESCAN_FFPROBE", "ffprobe")


def _input_url(path: Path) -> str:
    return "file:" + str(path.resolve())


def _limit_child(cpu_seconds: int, memory_bytes: int) -> None:
    """Runs in the ffmpeg child before exec: a decompression bomb burns only its own budget."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(value: object) -> float:
    """A finite number from ffprobe's output (whose tags are the uploader's text), else NaN."""
    try:
        number = float(str(value))
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _rotation(stream: dict) -> int:
    """Display rotation in degrees (0, 90, 180, 270; counter-clockwise, as ffprobe reports it);
    junk counts as 0."""
    sides, tags = stream.get("side_data_list"), stream.get("tags")
    angles = [side.get("rotation") for side in (sides if isinstance(sides, list) else [])
              if isinstance(side, dict) and "rotation" in side]
    angles.append(tags.get("rotate") if isinstance(tags, dict) else None)
    for angle in angles:
        degrees = _number(angle)
        if math.isnan(degrees):
            continue
        # ffmpeg turns frames upright only for angles within 1 degree of a quarter turn (other
        # angles are rotated inside the same frame size).
        quarter = round(degrees / 90.0) * 90
        return int(quarter) % 360 if abs(degrees - quarter) < 1.0 else 0
    return 0


def _frame_rate(stream: dict) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(stream.get(key) or "0/0").partition("/")
        numerator, denominator = _number(num), _number(den or "1")
        if numerator > 0 and denominator > 0:  # False for NaN
            return numerator / denominator
    return 0.0


def probe(path: Path, limits: MediaLimits = MediaLimits()) -> MediaInfo:
    """Probe `path` with ffprobe and validate it against `limits`.

    Raises InvalidMedia for anything that is not a readable video, MediaTooLarge when a limit is
    exceeded, UnsupportedMedia when there is no video stream."""
    path = Path(path)
    if not path.is_file():
        raise InvalidMedia(f"{path.name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidMedia(f"{path.name}: the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise MediaTooLarge(
            f"{path.name}: {size / 1e6:.0f} MB is over the {limits.max_bytes / 1e6:.0f} MB limit"
        )
    # ffprobe is run directly rather than through ffmpeg-python's probe(), which has no timeout.
    args = [
        _ffprobe_binary(), "-v", "error", *SAFE_INPUT, "-show_format", "-show_streams",
        "-of", "json", _input_url(path),
    ]
    try:
        done = subprocess.run(
            args, capture_output=True, timeout=limits.probe_timeout, check=False,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _limit_child(int(limits.probe_timeout), limits.decode_memory_bytes),
        )
    except subprocess.TimeoutExpired:
        raise DecodeLimitExceeded(f"{path.name}: probing took over {limits.probe_timeout:.0f} s "
                                  "(the probe_timeout limit)") from None
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        if "Cannot allocate memory" in stderr:
            raise DecodeLimitExceeded(
                f"{path.name}: probing needs more than the {limits.decode_memory_bytes / 2**20:.0f}"
                " MiB memory limit (decode_memory_bytes)")
        reason = _last(stderr) if stderr else "unknown format"
        raise InvalidMedia(f"{path.name}: not a readable video ({reason})")
    try:
        meta = json.loads(done.stdout)
    except ValueError:
        raise InvalidMedia(f"{path.name}: ffprobe gave unreadable output") from None

    streams = meta.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise UnsupportedMedia(f"{path.name}: no video stream (audio-only or not a video)")
    fmt = meta.get("format", {})
    duration = _number(fmt.get("duration") or video.get("duration") or 0.0)
    width, height = _number(video.get("width") or 0), _number(video.get("height") or 0)
    fps = _frame_rate(video)
    if not (width >= 1 and height >= 1):  # also NaN
        raise InvalidMedia(f"{path.name}: the video stream has no picture size")
    if not duration > 0:
        raise InvalidMedia(f"{path.name}: the video has no duration (truncated or a still image)")
    if duration > limits.max_duration:
        raise MediaTooLarge(
            f"{path.name}: {duration / 60:.1f} min is over the "
            f"{limits.max_duration / 60:.0f} min limit"
        )
    if width * height > limits.max_pixels:
        raise MediaTooLarge(f"{path.name}: {width:.0f}x{height:.0f} is over the resolution limit "
                            f"of {limits.max_pixels / 1e6:.1f} megapixels")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise InvalidMedia(f"{path.name}: implausible frame rate {fps:g} fps")
    rotation = _rotation(video)
    if rotation in (90, 270):
        width, height = height, width
    return MediaInfo(
        path=str(path),
        sha256=file_sha256(path),
        size_bytes=size,
        format_name=str(fmt.get("format_name", "")),
        duration=round(duration, 3),
        width=int(width),
        height=int(height),
        fps=round(fps, 3),
        video_codec=str(video.get("codec_name", "")),
        rotation=rotation,
        has_audio=audio is not None,
        audio_codec=str(audio.get("codec_name")) if audio else None,
    )


def frame_size(info: MediaInfo, max_side: int) -> tuple[int, int]:
    """The (width, height) frames are scaled to: longest side `max_side`, never upscaled, even."""
    scale = min(1.0, max_side / max(info.width, info.height))
    width = max(2, int(round(info.width * scale / 2)) * 2)
    height = max(2, int(round(info.height * scale / 2)) * 2)
    return width, height


def _run_limited(args: list[str], cpu_seconds: int, stderr: IO[bytes], memory_bytes: int
                 ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        preexec_fn=lambda: _limit_child(cpu_seconds, memory_bytes),
    )


def _read_watched(process: subprocess.Popen[bytes], size: int, stall_s: float,
                  stalled: threading.Event, *, exact: bool = True) -> bytes:
    """One read of ffmpeg's output (`size` bytes, or what is there when not `exact`); ffmpeg is
    killed and `stalled` set when nothing comes within `stall_s` seconds. Only the time spent
    waiting here counts, never the time a caller spends on the frames it was given."""
    assert process.stdout is not None

    def stall() -> None:
        stalled.set()
        process.kill()

    watchdog = threading.Timer(stall_s, stall)
    watchdog.daemon = True
    watchdog.start()
    try:
        return process.stdout.read(size) if exact else os.read(process.stdout.fileno(), size)
    finally:
        watchdog.cancel()


def _check_decode_limits(name: str, process: subprocess.Popen[bytes], stderr: str,
                         stalled: threading.Event, cpu_seconds: int, limits: MediaLimits
                         ) -> None:
    """Raise DecodeLimitExceeded when ffmpeg was stopped by a resource limit (call only when it
    was not stopped by us)."""
    if stalled.is_set():
        raise DecodeLimitExceeded(
            f"{name}: ffmpeg produced nothing for {limits.decode_stall_s:g} s (the wall-clock "
            "limit decode_stall_s) and was stopped")
    if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise DecodeLimitExceeded(
            f"{name}: decoding used up its CPU-time limit of {cpu_seconds} s and was stopped")
    if "Cannot allocate memory" in stderr:
        raise DecodeLimitExceeded(
            f"{name}: decoding needs more than the {limits.decode_memory_bytes / 2**20:.0f} MiB "
            "memory limit (decode_memory_bytes): frames this large look like a decompression "
            "bomb")


def _cpu_budget(info: MediaInfo) -> int:
    # Decoding runs far faster than realtime; 2x the duration plus a minute is generous.
    return int(60 + 2 * info.duration)


def sample_frames(
    info: MediaInfo, fps: float, max_side: int = 640, *, first: int = 0, stop: int | None = None,
    limits: MediaLimits = MediaLimits(),
) -> Iterator[Frame]:
    """Yield frames at `fps` per second, scaled by ffmpeg to fit `max_side`, as BGR arrays.

    Frames are read one at a time from ffmpeg's pipe, so memory stays flat for any length.
    `first` and `stop` select sample indices [first, stop) (time `index / fps`), for scanning a
    video in chunks: each chunk yields exactly the frames a whole-file decode yields there.
    ffmpeg runs under the CPU-time, memory and wall-clock limits of `limits`; breaking one raises
    DecodeLimitExceeded."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    # Never more samples than the probed (limit-checked) duration holds: timestamps that run on
    # past it cannot make the fps filter emit hours of frames from a tiny file.
    last = math.ceil(info.duration * fps) + 1
    stop = last if stop is None else min(stop, last)
    width, height = frame_size(info, max_side)
    seek_args: list[str] = []
    sampler = f"fps={fps:g}"
    if first > 0:
        # Start decoding a few samples early, on the sampling grid, and let the fps filter drop
        # up to the first wanted sample: it then picks the same source frame for each sample as a
        # whole-file decode would (timestamps after an input seek are relative to the seek point).
        lead = min(first, int(math.ceil(CHUNK_LEAD_S * fps)))
        seek_args = ["-ss", f"{(first - lead) / fps:.6f}"]
        sampler = f"fps={fps:g}:start_time={lead / fps:.6f}"
    frame_cap: list[str] = []
    if first == 0 and info.duration * fps < 1:
        # Shorter than one sampling interval (a 0.3 s clip at 1 fps): the fps filter rounds
        # it to no frame at all, so take the first frame as the one sample.
        sampler, frame_cap, stop = "null", ["-frames:v", "1"], min(stop, 1)
    args = [
        _ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *SAFE_INPUT,
        *seek_args, "-i", _input_url(Path(info.path)), "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", f"{sampler},scale={width}:{height}:flags=area", "-fps_mode", "passthrough",
        *frame_cap, "-pix_fmt", "bgr24", "-f", "rawvideo", "pipe:1",
    ]
    frame_bytes = width * height * 3
    # Frames this call should yield (the fps filter emits frames for the whole duration).
    expected = min(info.duration * fps, stop if stop is not None else math.inf) - first
    index = first
    stalled, stopped_by_us, ended = threading.Event(), False, False
    cpu_seconds = _cpu_budget(info)
    # stderr goes to a file: a pipe nobody reads could fill up and stall ffmpeg.
    with tempfile.TemporaryFile() as errors:
        process = _run_limited(args, cpu_seconds, errors, limits.decode_memory_bytes)
        assert process.stdout is not None
        try:
            while index < stop:
                buffer = _read_watched(process, frame_bytes, limits.decode_stall_s, stalled)
                if len(buffer) < frame_bytes:
                    ended = True  # ffmpeg closed its output: it is exiting by itself
                    break
                image = np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
                yield Frame(index=index, t=round(index / fps, 3), image=image)
                index += 1
        finally:
            process.stdout.close()
            if ended:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=limits.decode_stall_s)
            if process.poll() is None:
                process.kill()
                stopped_by_us = not stalled.is_set()
            process.wait()
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
            reason = _last(stderr)
    name = Path(info.path).name
    if not stopped_by_us:
        _check_decode_limits(name, process, stderr, stalled, cpu_seconds, limits)
    if index == first and (first == 0 or expected >= 1):
        raise InvalidMedia(f"{name}: no frame could be decoded ({reason})")
    # The fps filter emits frames for the whole duration, so a large shortfall means the data
    # ends early (ffmpeg itself exits 0 on a partial file).
    if index - first < 0.5 * expected:
        raise InvalidMedia(f"{name}: truncated or corrupt: decoding stopped at "
                           f"{index / fps:.1f} s of {info.duration:.1f} s ({reason})")


def extract_audio(info: MediaInfo, start: float = 0.0, end: float | None = None, *,
                  limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """The audio track as float32 mono samples at 16 kHz (empty when there is none): all of it,
    or the part from `start` to `end` seconds (never past the probed duration). ffmpeg runs
    under the limits of `limits`, as in `sample_frames`."""
    if not info.has_audio:
        return np.zeros(0, np.float32)
    span: list[str] = []
    if start > 0:
        span += ["-ss", f"{start:.6f}"]
    # A second of slack past the probed duration: audio whose timestamps run on is cut there.
    end = info.duration + 1.0 if end is None else min(end, info.duration + 1.0)
    span += ["-t", f"{max(0.0, end - max(start, 0.0)):.6f}"]
    args = [
        _ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *SAFE_INPUT,
        *span, "-i", _input_url(Path(info.path)), "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(AUDIO_RATE), "-f", "s16le", "pipe:1",
    ]
    stalled = threading.Event()
    cpu_seconds = _cpu_budget(info)
    with tempfile.TemporaryFile() as errors:
        process = _run_limited(args, cpu_seconds, errors, limits.decode_memory_bytes)
        assert process.stdout is not None
        blocks = []
        try:
            while block := _read_watched(process, 1 << 20, limits.decode_stall_s, stalled,
                                         exact=False):
                blocks.append(block)
        finally:
            process.stdout.close()
            process.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    raw = b"".join(blocks)
    _check_decode_limits(Path(info.path).name, process, stderr, stalled, cpu_seconds, limits)
    if process.returncode != 0 and not raw:
        raise InvalidMedia(
            f"{Path(info.path).name}: the audio track could not be decoded ({_last(stderr)})"
        )
    raw = raw[:len(raw) // 2 * 2]  # whole 16-bit samples
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def _last(stderr: str) -> str:
    """ffmpeg's last complaint, without the `file:/server/path: ` prefix it puts on input errors."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return "ffmpeg gave no reason"
    return re.sub(r"^file:.*?: (?=[A-Z])", "", lines[-1])
