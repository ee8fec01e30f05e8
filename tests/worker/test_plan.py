"""The pieces a distributed scan is built from, without services: the chunk plan, frames of a
chunk equal to a whole-file decode, the word-level merge of overlapping transcripts, JSON
transport of the pipeline types, content-addressed storage and the settings from env."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines.media import probe, sample_frames
from pipelines.scan import Chunk, EvidenceCandidate, ScanOptions, VisionPart, plan_chunks
from pipelines.speech import border_cut, merge_transcripts, shift_transcript
from pipelines.types import (
    Detection,
    EvidenceFrame,
    MediaInfo,
    Transcript,
    TranscriptSegment,
    Word,
)
from worker.codec import from_data, to_data
from worker.config import WorkerSettings
from worker.storage import LocalStorage, check_key, open_storage


def media(duration: float) -> MediaInfo:
    return MediaInfo(path="clip.mp4", sha256="0" * 64, size_bytes=1, format_name="mp4",
                     duration=duration, width=640, height=360, fps=25.0, video_codec="h264",
                     rotation=0, has_audio=True, audio_codec="aac")


@pytest.mark.parametrize(("duration", "fps", "chunk_s", "frames"), [
    (20.0, 1.0, 120.0, [(0, None)]),  # short video: one chunk, scanned as a whole
    (20.0, 1.0, 8.0, [(0, 8), (8, 16), (16, None)]),
    (19.0, 1.0, 8.0, [(0, 8), (8, None)]),  # a 3 s tail joins the previous chunk
    (20.0, 2.0, 8.2, [(0, 16), (16, 32), (32, None)]),  # chunk length in whole frames
    (60.0, 0.5, 10.0, [(0, 5), (5, 10), (10, 15), (15, 20), (20, 25), (25, None)]),
])
def test_chunks_cover_every_frame_once(duration: float, fps: float, chunk_s: float,
                                       frames: list[tuple[int, int | None]]) -> None:
    chunks = plan_chunks(media(duration), ScanOptions(fps=fps, chunk_s=chunk_s))
    assert [(c.first_frame, c.stop_frame) for c in chunks] == frames
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.start == pytest.approx(chunk.first_frame / fps)


def test_chunk_audio_overlaps_its_neighbours() -> None:
    chunks = plan_chunks(media(20.0), ScanOptions(chunk_s=8.0, chunk_overlap_s=3.0))
    assert [(c.audio_start, c.audio_end) for c in chunks] == [(0.0, 11.0), (5.0, 19.0),
                                                              (13.0, None)]


def test_chunked_frames_equal_a_whole_file_decode(threat_knife_video: Path) -> None:
    """Chunk borders fall between sampled frames, and each chunk yields the very frames (same
    index, time and pixels) that one decode of the whole file yields there."""
    info = probe(threat_knife_video)
    for fps in (1.0, 2.0):
        whole = list(sample_frames(info, fps, 160))
        chunks = plan_chunks(info, ScanOptions(fps=fps, chunk_s=7.0))
        assert len(chunks) == 3
        parts = [f for c in chunks
                 for f in sample_frames(info, fps, 160, first=c.first_frame, stop=c.stop_frame)]
        assert [(f.index, f.t) for f in parts] == [(f.index, f.t) for f in whole]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(parts, whole, strict=True))


def words(*timed: tuple[str, float, float]) -> tuple[Word, ...]:
    return tuple(Word(start=s, end=e, text=t, probability=0.9) for t, s, e in timed)


def segment(*timed: tuple[str, float, float]) -> TranscriptSegment:
    found = words(*timed)
    return TranscriptSegment(start=found[0].start, end=found[-1].end,
                             text=" ".join(w.text for w in found), words=found,
                             avg_logprob=-0.3, no_speech_prob=0.1, compression_ratio=1.2)


def transcript(*segments: TranscriptSegment, speech: float = 5.0) -> Transcript:
    return Transcript(language="en", language_probability=0.9, segments=segments,
                      model="whisper@1", speech_seconds=speech)


def spoken(merged: Transcript) -> list[str]:
    return [w.text for s in merged.segments for w in s.words]


def test_one_slice_is_returned_unchanged() -> None:
    only = transcript(segment(("hello", 1.0, 1.4)))
    assert merge_transcripts([only], [(0.0, 10.0)]) is only


def test_words_heard_by_both_slices_are_kept_once() -> None:
    # Slices [0, 12) and [4, 20): both hear "see you at nine ... bring it" around the border at
    # 8 s, with slightly different timings; they are cut in the pause at 7.6-8.6 s.
    first = transcript(segment(("see", 5.0, 5.3), ("you", 5.3, 5.6), ("at", 5.7, 5.9),
                               ("nine", 6.0, 7.6)),
                       segment(("bring", 8.6, 8.9), ("it", 8.9, 9.2)))
    second = transcript(segment(("see", 5.02, 5.31), ("you", 5.31, 5.62), ("at", 5.7, 5.92),
                                ("nine", 6.02, 7.58)),
                        segment(("bring", 8.62, 8.9), ("it", 8.9, 9.25), ("now", 9.3, 9.6)))
    assert border_cut(first, second, 8.0, 2.0) == 8.1
    merged = merge_transcripts([first, second], [(0.0, 12.0), (4.0, 20.0)])
    assert spoken(merged) == ["see", "you", "at", "nine", "bring", "it", "now"]
    assert [s.text for s in merged.segments] == ["see you at nine", "bring it now"]


def test_a_sentence_cut_by_the_border_is_joined_back() -> None:
    # Continuous speech across the border: no silence, so the cut is the border itself; the
    # halves of "I am going to find you" become one segment again.
    first = transcript(segment(("I", 6.0, 6.4), ("am", 6.4, 6.8), ("going", 6.8, 7.4),
                               ("to", 7.4, 7.8), ("find", 7.8, 8.2), ("yo", 8.2, 8.6)))
    second = transcript(segment(("going", 6.81, 7.4), ("to", 7.4, 7.8), ("find", 7.8, 8.2),
                                ("you", 8.2, 8.8)))
    merged = merge_transcripts([first, second], [(0.0, 9.0), (7.0, 16.0)])
    assert spoken(merged) == ["I", "am", "going", "to", "find", "you"]
    assert [s.text for s in merged.segments] == ["I am going to find you"]


def test_merge_keeps_language_of_the_slice_with_most_speech_and_shifts_times() -> None:
    quiet = replace(transcript(segment(("hm", 1.0, 1.2)), speech=0.5), language="fr")
    busy = shift_transcript(transcript(segment(("hello", 1.0, 1.5)), speech=6.0), 10.0)
    assert busy.segments[0].words[0].start == 11.0
    merged = merge_transcripts([quiet, busy], [(0.0, 14.0), (6.0, 20.0)])
    assert merged.language == "en"
    assert spoken(merged) == ["hm", "hello"]
    assert 0 < merged.speech_seconds < 6.5


def test_pipeline_types_survive_json_transport() -> None:
    import json

    options = ScanOptions(fps=0.5, speech_model="tiny.en", chunk_s=8.0)
    detection = Detection(t=1.0, label="knife", confidence=0.7, box=(1.0, 2.0, 3.0, 4.0),
                          model="m@1", source_label="knife", frame_index=2)
    part = VisionPart(chunk=1, detections=(detection,), frames_sampled=8, evidence=(
        EvidenceCandidate(0.7, EvidenceFrame(t=1.0, frame_index=2, path="/x.jpg",
                                             labels=("knife",))),))
    speech = transcript(segment(("hi", 0, 1)))
    chunk = plan_chunks(media(20.0), options)[1]
    for value, kind in ((options, ScanOptions), (part, VisionPart), (speech, Transcript),
                        (media(3.0), MediaInfo), (chunk, Chunk)):
        assert from_data(kind, json.loads(json.dumps(to_data(value)))) == value


def test_storage_keys_are_content_hashes(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    upload = tmp_path / "../../etc/passwd name.mp4".replace("/", "_")
    upload.write_bytes(b"video bytes")
    key = store.put(upload)
    assert key == hashlib.sha256(b"video bytes").hexdigest()
    assert store.put(upload) == key and store.exists(key)
    assert store.local_path(key).read_bytes() == b"video bytes"
    with store.open(key) as handle:
        assert handle.read() == b"video bytes"
    assert [p.name for p in (tmp_path / "store").rglob("*") if p.is_file()] == [key]
    for bad in ("../x", "A" * 64, key[:-1]):
        with pytest.raises(ValueError):
            check_key(bad)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    with pytest.raises(ValueError, match="only local"):
        open_storage("s3://bucket/media")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCITESCAN_RESULT_BACKEND", raising=False)
    monkeypatch.setenv("INCITESCAN_BROKER_URL", "redis://example:6379/3")
    monkeypatch.setenv("INCITESCAN_VISIBILITY_TIMEOUT", "15")
    config = WorkerSettings.from_env()
    assert config.result_backend == config.broker_url == "redis://example:6379/3"
    assert config.visibility_timeout == 15.0
    monkeypatch.setenv("INCITESCAN_VISIBILITY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="INCITESCAN_VISIBILITY_TIMEOUT"):
        WorkerSettings.from_env()


def test_lease_settings_come_from_the_environment_and_are_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCITESCAN_LEASE_TIMEOUT", "12")
    monkeypatch.setenv("INCITESCAN_HEARTBEAT", "3")
    monkeypatch.setenv("INCITESCAN_SHUTDOWN_GRACE", "90")
    config = WorkerSettings.from_env()
    assert (config.lease_timeout, config.heartbeat, config.shutdown_grace) == (12.0, 3.0, 90.0)
    monkeypatch.setenv("INCITESCAN_HEARTBEAT", "7")  # a lease could lapse between two beats
    with pytest.raises(ValueError, match="at most half of INCITESCAN_LEASE_TIMEOUT"):
        WorkerSettings.from_env()
    monkeypatch.setenv("INCITESCAN_HEARTBEAT", "3")
    monkeypatch.setenv("INCITESCAN_SHUTDOWN_GRACE", "-1")
    with pytest.raises(ValueError, match="INCITESCAN_SHUTDOWN_GRACE"):
        WorkerSettings.from_env()
