"""Re-upload variants of a video, made with the real ffmpeg: the edits that removed videos come
back with (re-encoded, resized, cropped, bordered, captioned, cut, sped up or slowed down, with a
new intro). Used by tests/pipelines/test_matching.py and bench/bench_matching.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

# name -> (ffmpeg arguments after the inputs, whether an intro clip is the second input)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "reencode": (["-c:v", "libx264", "-crf", "36", "-preset", "veryfast", "-c:a", "aac",
                  "-b:a", "32k"], False),
    "resize": (["-vf", "scale=426:240", "-c:a", "copy"], False),
    "crop10": (["-vf", "crop=iw*0.9:ih*0.9", "-c:a", "copy"], False),
    "borders": (["-vf", "pad=iw+120:ih+80:60:40:color=white", "-c:a", "copy"], False),
    "caption": (["-vf", "drawtext=text='FREE THE MANDEM':fontsize=36:fontcolor=yellow:x=20:"
                 "y=h-56:box=1:boxcolor=black@0.8", "-c:a", "copy"], False),
    "clip": (["-ss", "7", "-t", "10"], False),
    "faster": (["-filter_complex", "[0:v]setpts=PTS/1.05[v];[0:a]atempo=1.05[a]", "-map", "[v]",
                "-map", "[a]"], False),
    "slower": (["-filter_complex", "[0:v]setpts=PTS/0.96[v];[0:a]atempo=0.96[a]", "-map", "[v]",
                "-map", "[a]"], False),
    "intro": (["-filter_complex", "[1:v]trim=0:8,setpts=PTS-STARTPTS[iv];"
               "[1:a]atrim=0:8,asetpts=PTS-STARTPTS[ia];[iv][ia][0:v][0:a]concat=n=2:v=1:a=1"
               "[v][a]", "-map", "[v]", "-map", "[a]"], True),
}


# The same edits for a video without sound.
SILENT = {
    "faster": ["-vf", "setpts=PTS/1.05"],
    "slower": ["-vf", "setpts=PTS/0.96"],
    "intro": ["-filter_complex", "[1:v]trim=0:8,setpts=PTS-STARTPTS[iv];[iv][0:v]concat=n=2:v=1"
              ":a=0[v]", "-map", "[v]"],
}


def has_audio(path: Path) -> bool:
    """Whether `path` has an audio stream (ffprobe)."""
    found = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
                            "stream=index", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True, timeout=60)
    return bool(found.stdout.strip())


def make_variant(source: Path, name: str, target_dir: Path, intro: Path | None = None) -> Path:
    """Write variant `name` of `source` into `target_dir` (`intro`: the clip put in front of
    it for the "intro" variant) and return its path."""
    args, needs_intro = VARIANTS[name]
    if name in SILENT and not has_audio(source):
        args = SILENT[name]
    target = target_dir / f"{source.stem}-{name}.mp4"
    inputs = ["-i", str(source)]
    if needs_intro:
        if intro is None:
            raise ValueError(f"variant {name} needs an intro clip")
        inputs += ["-i", str(intro)]
    if name == "clip":  # an input seek: cut from the middle
        inputs = [*args[:2], "-i", str(source)]
        args = [*args[2:], "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, *args, str(target)],
                   check=True, capture_output=True, timeout=120)
    return target
