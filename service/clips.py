"""Short clips of a stored video for reviewers: ffmpeg cuts `[start, end)` (capped in length)
from the local file in the media storage only (file protocol, the same demuxer whitelist as the
scanner), re-encodes it small (H.264/AAC, at most 480 lines, MP4 with the index first so a
browser plays it at once) under CPU and wall-clock limits, into a temporary file."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import tempfile
from pathlib import Path

from pipelines.errors import InvalidMedia
from pipelines.media import SAFE_INPUT


def _limits(cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))


MIN_CLIP_S = 0.1  # shorter ranges round badly: `-t 0.000` is "to the end" to ffmpeg
LENGTH_SLACK_S = 0.5  # encoders end on a frame or audio block boundary past the request


def clip_length(path: Path, *, timeout: float = 30.0) -> float:
    """The duration of the MP4 at `path` in seconds, by ffprobe (container, then streams)."""
    done = subprocess.run(
        [os.environ.get("INCITESCAN_FFPROBE", "ffprobe"), "-v", "error", *SAFE_INPUT,
         "-show_entries", "format=duration:stream=duration", "-of", "json",
         "file:" + str(path.resolve())],
        capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    try:
        data = json.loads(done.stdout or b"{}")
        values = [data.get("format", {}).get("duration"),
                  *(s.get("duration") for s in data.get("streams", []))]
        return max(float(v) for v in values if v not in (None, "N/A"))
    except (ValueError, TypeError, AttributeError):
        raise InvalidMedia("the clip's length could not be read") from None


def cut_clip(source: Path, start: float, end: float, *, max_seconds: float | None = None,
             timeout: float = 120.0) -> Path:
    """Encode `source` from `start` to `end` seconds into a new temporary MP4 file and return its
    path (the caller deletes it). The range must be finite, start at 0 or later and last at
    least MIN_CLIP_S (ValueError otherwise); the output's length is checked against it (and
    `max_seconds`). Raises InvalidMedia when ffmpeg cannot produce it."""
    length = end - start
    if not (math.isfinite(start) and math.isfinite(end) and start >= 0
            and length >= MIN_CLIP_S):
        raise ValueError(f"a clip runs from a start >= 0 for at least {MIN_CLIP_S} s")
    descriptor, name = tempfile.mkstemp(prefix="incitescan-clip-", suffix=".mp4")
    os.close(descriptor)
    target = Path(name)
    args = [
        os.environ.get("INCITESCAN_FFMPEG", "ffmpeg"), "-nostdin", "-hide_banner",
        "-loglevel", "error", "-y", *SAFE_INPUT,
        "-ss", f"{start:.3f}", "-t", f"{length:.3f}", "-i", "file:" + str(source.resolve()),
        "-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn",
        "-vf", "scale=-2:'min(480,ih)'", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart",
        "-f", "mp4", "file:" + str(target),
    ]
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, preexec_fn=lambda: _limits(int(timeout)))
    except subprocess.TimeoutExpired:
        target.unlink(missing_ok=True)
        raise InvalidMedia(f"cutting the clip took over {timeout:.0f} s") from None
    if done.returncode != 0 or target.stat().st_size == 0:
        target.unlink(missing_ok=True)
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise InvalidMedia(f"the clip could not be cut ({lines[-1] if lines else 'no reason'})")
    try:
        produced = clip_length(target)
    except (InvalidMedia, subprocess.TimeoutExpired):
        target.unlink(missing_ok=True)
        raise InvalidMedia("the clip's length could not be checked") from None
    cap = min(length, max_seconds if max_seconds is not None else length) + LENGTH_SLACK_S
    if produced > cap:  # never hand out more than was asked for, whatever ffmpeg made of it
        target.unlink(missing_ok=True)
        raise InvalidMedia(f"the clip came out {produced:.1f} s long for a {length:.1f} s "
                           "range; refused")
    return target
