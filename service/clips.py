"""Short clips of a stored video for reviewers: ffmpeg cuts `[start, end)` (capped in length)
from the local file in the media storage only (file protocol, the same demuxer whitelist as the
scanner), re-encodes it small (H.264/AAC, at most 480 lines, MP4 with the index first so a
browser plays it at once) under CPU and wall-clock limits, into a temporary file."""

from __future__ import annotations

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


def cut_clip(source: Path, start: float, end: float, *, timeout: float = 120.0) -> Path:
    """Encode `source` from `start` to `end` seconds into a new temporary MP4 file and return its
    path (the caller deletes it). Raises InvalidMedia when ffmpeg cannot produce it."""
    descriptor, name = tempfile.mkstemp(prefix="incitescan-clip-", suffix=".mp4")
    os.close(descriptor)
    target = Path(name)
    args = [
        os.environ.get("INCITESCAN_FFMPEG", "ffmpeg"), "-nostdin", "-hide_banner",
        "-loglevel", "error", "-y", *SAFE_INPUT,
        "-ss", f"{start:.3f}", "-t", f"{end - start:.3f}", "-i", "file:" + str(source.resolve()),
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
    return target
