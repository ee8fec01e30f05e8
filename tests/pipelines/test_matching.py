"""Re-upload matching with real ffmpeg, real PDQ hashes and real Chromaprint fingerprints: every
variant of a banked sample (re-encoded, resized, cropped, bordered, captioned, cut, sped up or
slowed down, with a new intro) matches it with the right segments, and the other samples do
not. Pure parts (content box, time alignment, audio score, the bank file format, fusion) are
checked with small tables."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines import ScanOptions, load_models, scan, to_dict
from pipelines.fusion import FusionOptions, add_known_content, fuse
from pipelines.matching import (
    REGION_NAMES,
    BankFormatError,
    BankVideo,
    EarlyMatcher,
    FrameHit,
    HashBank,
    MatchOptions,
    _chain,
    audio_match_score,
    content_box,
    fingerprint_audio,
    fingerprint_file,
    fingerprint_from_report,
    match_video,
)
from pipelines.report import summary
from pipelines.types import AudioFingerprint, FrameHash, KnownMatch, MatchedSegment

from .conftest import require_model
from .variants import VARIANTS, make_variant

BANKED = "threat_gun_drill"
# Samples that share no picture with threat_gun_drill (samples/labels.json shot lists).
UNRELATED = ("threat_knife", "threat_speech_only", "benign_street", "music_only",
             "weapon_silent", "kitchen_benign")
# (where the banked video's content starts in the variant, where it starts in the banked
#  video, its speed: banked seconds per variant second)
ALIGNMENT = {"clip": (0.0, 7.0, 1.0), "intro": (8.0, 0.0, 1.0), "faster": (0.0, 0.0, 1.05),
             "slower": (0.0, 0.0, 0.96)}


@pytest.fixture(scope="module")
def banked(threat_gun_drill_video: Path) -> BankVideo:
    """threat_gun_drill (pistols and rifles over a drill beat) hashed as a removed video."""
    video = fingerprint_file(threat_gun_drill_video)
    return replace(video, video_id=BANKED, label="removed by reviewer: test")


@pytest.fixture(scope="module")
def bank(banked: BankVideo) -> HashBank:
    """A bank holding threat_gun_drill only."""
    return HashBank([banked])


@pytest.fixture(scope="module")
def variant_files(threat_gun_drill_video: Path, kitchen_benign_video: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every variant of threat_gun_drill, made with ffmpeg (the intro is from kitchen_benign)."""
    folder = tmp_path_factory.mktemp("variants")
    return {name: make_variant(threat_gun_drill_video, name, folder, intro=kitchen_benign_video)
            for name in VARIANTS}


@pytest.fixture(scope="module")
def variants(variant_files: dict[str, Path]) -> dict[str, BankVideo]:
    """Every variant hashed (frames at 1 fps, audio fingerprint)."""
    return {name: fingerprint_file(path) for name, path in variant_files.items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_matches_the_banked_video(name: str, variants: dict[str, BankVideo],
                                                bank: HashBank) -> None:
    variant = variants[name]
    matches = match_video(variant.frames, variant.audio, bank, interval=1.0)
    assert [m.video_id for m in matches] == [BANKED]
    match = matches[0]
    starts_at, bank_start, speed = ALIGNMENT.get(name, (0.0, 0.0, 1.0))
    content_frames = len(variant.frames) - int(starts_at)
    assert match.matched_frames >= 0.8 * content_frames
    first = match.segments[0]
    assert first.start == pytest.approx(starts_at, abs=1.0)
    assert first.bank_start == pytest.approx(bank_start, abs=1.0)
    assert match.speed == pytest.approx(speed, abs=0.04)
    assert match.audio_score is not None and match.audio_score >= 0.5
    assert match.score >= 0.9
    assert BANKED in match.reason and "sampled frames" in match.reason


@pytest.mark.parametrize("name", UNRELATED)
def test_unrelated_samples_do_not_match(name: str, bank: HashBank, request) -> None:
    video = fingerprint_file(request.getfixturevalue(f"{name}_video"))
    assert match_video(video.frames, video.audio, bank, interval=1.0) == ()
    assert bank.lookup(video.frames) == []  # not one frame within PDQ distance 31


def test_a_shared_still_is_not_a_known_match(benign_slang_video: Path, bank: HashBank) -> None:
    """benign_slang shows the phone picture of threat_gun_drill (8-12 s there) for its first
    6 s: those frames do match, but a third of a video in one still is no re-upload."""
    video = fingerprint_file(benign_slang_video)
    hits = bank.lookup(video.frames)
    assert {h.query_t for h in hits} == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    assert {h.bank_t for h in hits} <= {8.0, 9.0, 10.0, 11.0}
    assert match_video(video.frames, video.audio, bank, interval=1.0) == ()
    loose = MatchOptions(min_share=0.3)
    (match,) = match_video(video.frames, video.audio, bank, interval=1.0, options=loose)
    assert match.segments[0].start == 0.0 and match.segments[0].end == 6.0


def test_early_matcher_answers_after_the_first_aligned_frames(variants: dict[str, BankVideo],
                                                             bank: HashBank) -> None:
    seen: list[tuple[int, KnownMatch]] = []
    early = EarlyMatcher(bank, 1.0, lambda m: seen.append((len(early.frames), m)))
    for frame in variants["reencode"].frames:
        early(frame)
    assert len(seen) == 1  # once per banked video
    fed, match = seen[0]
    assert fed == MatchOptions().early_frames
    assert match.video_id == BANKED and match.matched_frames == fed


def _frame(t: float, pdq: str, quality: int = 100) -> FrameHash:
    return FrameHash(t=t, frame_index=int(t), quality=quality, pdq=(pdq,) * len(REGION_NAMES))


def test_low_quality_frames_never_match() -> None:
    flat = "0" * 64
    featureless = HashBank([BankVideo("black", "black frames", tuple(_frame(t, flat, 0)
                                                                     for t in range(5)))])
    detailed = HashBank([BankVideo("sharp", "sharp frames", tuple(_frame(t, flat, 90)
                                                                  for t in range(5)))])
    assert featureless.lookup([_frame(t, flat, 90) for t in range(5)]) == []
    assert detailed.lookup([_frame(t, flat, 10) for t in range(5)]) == []
    assert len(detailed.lookup([_frame(t, flat, 90) for t in range(5)])) == 25


def test_content_box_trims_nested_borders_and_ignores_captions() -> None:
    image = np.full((200, 300), 255, np.uint8)  # white padding
    image[20:180, 30:270] = 0  # black letterbox bars
    rng = np.random.default_rng(0)
    image[20:180, 90:210] = rng.integers(30, 220, (160, 120))  # the picture
    image[150:165, 40:160] = 255  # a caption crossing the left bar and the picture
    assert content_box(image) == (20, 180, 90, 210)
    blank = np.zeros((100, 100), np.uint8)
    assert content_box(blank) == (0, 100, 0, 100)


def _hit(q: float, b: float, video: str = "v") -> FrameHit:
    return FrameHit(query_t=q, video_id=video, bank_t=b, distance=0)


@pytest.mark.parametrize(("hits", "expected"), [
    # the same times: one chain
    ([_hit(0, 0), _hit(1, 1), _hit(2, 2)], [(0, 0), (1, 1), (2, 2)]),
    # a static shot matches every banked frame of it: the chain keeps the query's pace
    ([_hit(q, b) for q in range(3) for b in range(3)], [(0, 0), (1, 1), (2, 2)]),
    # an offset clip with a stray hit far away in the banked video
    ([_hit(0, 10), _hit(1, 11), _hit(2, 40), _hit(3, 13)], [(0, 10), (1, 11), (3, 13)]),
    # running backwards is no alignment
    ([_hit(0, 5), _hit(1, 4), _hit(2, 3)], [(0, 5)]),
])
def test_chain_follows_time(hits: list[FrameHit], expected: list[tuple[float, float]]) -> None:
    chain = _chain(hits, MatchOptions(time_slack_s=1.0))
    assert [(h.query_t, h.bank_t) for h in chain] == expected


def test_audio_score_finds_shifted_audio_and_rejects_other_audio() -> None:
    rng = np.random.default_rng(1)
    items = rng.integers(0, 2**32, 300, dtype=np.uint64)
    banked = [AudioFingerprint(0.0, 0.124, tuple(int(v) for v in items), "chromaprint2")]
    shifted = [AudioFingerprint(0.0, 0.124, tuple(int(v) for v in items[37:237]),
                                "chromaprint2")]
    other = [AudioFingerprint(0.0, 0.124, tuple(int(v) for v in rng.integers(
        0, 2**32, 200, dtype=np.uint64)), "chromaprint2")]
    assert audio_match_score(shifted, banked) == 1.0
    assert audio_match_score(other, banked) == 0.0
    assert audio_match_score([], banked) is None


def test_audio_fingerprint_of_short_audio_and_of_a_tone() -> None:
    assert fingerprint_audio(np.zeros(16_000, np.float32)) is None  # under 3 s
    tone = np.sin(np.arange(16_000 * 6) * 2 * np.pi * 440 / 16_000).astype(np.float32)
    heard = fingerprint_audio(tone, start=12.0)
    # An item sums up about 2 s of chroma every 0.124 s: 6 s give a few dozen.
    assert heard is not None and heard.start == 12.0 and 20 < len(heard.items) < 50


def test_bank_file_round_trip(banked: BankVideo) -> None:
    out = io.StringIO()
    rows = HashBank([banked]).write_csv(out)
    assert rows == len(banked.frames) * len(REGION_NAMES) + len(banked.audio)
    text = out.getvalue()
    assert text.splitlines()[0] == "signal_type,signal,video_id,t,quality,region,label"
    again = HashBank.read_csv(io.StringIO(text))
    assert again.videos[BANKED] == banked


def test_bank_file_with_one_hash_a_frame(banked: BankVideo) -> None:
    """A list from another platform may hold one whole-frame PDQ a frame and nothing else."""
    lines = ["signal_type,signal,video_id,t"] + [
        f"pdq,{frame.pdq[0]},theirs-1,{frame.t:g}" for frame in banked.frames]
    bank = HashBank.read_csv(io.StringIO("\n".join(lines) + "\n"), source="partner.csv")
    assert bank.videos["theirs-1"].label == "partner.csv"
    (match,) = match_video(banked.frames, (), bank, interval=1.0)
    assert match.video_id == "theirs-1" and match.frame_share == 1.0


@pytest.mark.parametrize(("text", "message"), [
    ("hash,id\nabc,1\n", "the header lacks signal, signal_type, video_id"),
    ("signal_type,signal,video_id\npdq,abcd,v\n", "line 2: a PDQ hash is 64 hex digits"),
    ("signal_type,signal,video_id\nmd5,abcd,v\n", "unsupported signal_type 'md5'"),
    ("signal_type,signal,video_id\npdq,,v\n", "video_id and signal are required"),
])
def test_bad_bank_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(BankFormatError, match=message):
        HashBank.read_csv(io.StringIO(text))


def test_threatexchange_reads_our_signal_type_and_hashes(banked: BankVideo) -> None:
    """The bank's `pdq` rows are threatexchange PdqSignal hashes: it parses and compares them."""
    from threatexchange.signal_type.pdq.signal import PdqSignal

    assert PdqSignal.get_name() == "pdq"
    first, second = banked.frames[0].pdq[0], banked.frames[-1].pdq[0]
    assert PdqSignal.validate_signal_str(first) == first
    assert PdqSignal.compare_hash(first, first).match
    assert not PdqSignal.compare_hash(first, second).match


def test_removing_a_video_rebuilds_the_index(banked: BankVideo) -> None:
    bank = HashBank([banked, replace(banked, video_id="copy")])
    assert len(bank) == 2 * len(banked.frames) * len(REGION_NAMES)
    assert {h.video_id for h in bank.lookup(banked.frames[:2])} == {BANKED, "copy"}
    bank.remove("copy")
    assert {h.video_id for h in bank.lookup(banked.frames[:2])} == {BANKED}
    assert len(bank) == len(banked.frames) * len(REGION_NAMES)


def _match(score: float) -> KnownMatch:
    return KnownMatch(video_id="v1", label="removed", score=score, frame_share=1.0,
                      matched_frames=10, matched_seconds=10.0, speed=1.0, offset=0.0,
                      audio_score=None, segments=(MatchedSegment(2.0, 12.0, 0.0, 10.0, 10, 4.0),),
                      reason="known content: matches banked video v1")


@pytest.mark.parametrize(("before", "score", "risk"), [(0.0, 0.8, 0.8), (0.5, 0.8, 0.9),
                                                        (0.2, 1.0, 1.0)])
def test_known_content_raises_the_risk_with_its_reason(before: float, score: float,
                                                       risk: float) -> None:
    base = replace(fuse(20.0, (640, 480), 1.0, [], []), risk_score=before)
    raised = add_known_content(base, [_match(score)], FusionOptions())
    assert raised.risk_score == pytest.approx(risk)
    assert raised.flagged and raised.signal_scores.known_content == score
    (segment,) = raised.flagged_segments
    assert segment.signals == ("known_content",) and (segment.start, segment.end) == (2.0, 12.0)
    assert "banked video v1" in segment.reasons[0]
    assert raised.reasons[0] == "known content: matches banked video v1"
    assert add_known_content(base, [], FusionOptions()) is base


def test_report_fingerprint_round_trip(banked: BankVideo) -> None:
    report = json.loads(json.dumps({"fingerprint": {
        "frames": [{"t": f.t, "frame_index": f.frame_index, "quality": f.quality,
                    "pdq": list(f.pdq)} for f in banked.frames],
        "audio": [{"start": a.start, "item_s": a.item_s, "items": list(a.items),
                   "algorithm": a.algorithm} for a in banked.audio]}}))
    assert fingerprint_from_report(report) == (banked.frames, banked.audio)
    assert fingerprint_from_report({}) == ((), ())


def test_scan_answers_a_reupload_early_and_explains_it(variant_files: dict[str, Path],
                                                       variants: dict[str, BankVideo],
                                                       bank: HashBank, repo_root: Path) -> None:
    import jsonschema

    options = ScanOptions(speech_model="")  # the vision stage and the audio fingerprint only
    for name in options.detectors:
        require_model(name)
    early: list[KnownMatch] = []
    result = scan(variant_files["clip"], options, models=load_models(options), bank=bank,
                  on_known_match=early.append)
    assert [m.video_id for m in early] == [BANKED]
    assert early[0].matched_frames == MatchOptions().early_frames
    (match,) = result.known_matches
    assert match.frame_share == 1.0 and match.segments[0].bank_start == pytest.approx(7, abs=1)
    assert match.audio_score is not None and match.audio_score >= 0.5
    assert result.fusion.flagged and result.fusion.signal_scores.known_content >= 0.9
    # The scan hashed the frames it decoded for detection: the same hashes as hashing alone.
    assert result.frame_hashes == variants["clip"].frames
    assert result.audio_fingerprints == variants["clip"].audio
    report = to_dict(result)
    jsonschema.validate(report, json.loads((repo_root / "docs" / "report-schema.json")
                                           .read_text()))
    assert fingerprint_from_report(report) == (result.frame_hashes, result.audio_fingerprints)
    assert any("known_content" in s["signals"] for s in report["flagged_segments"])
    assert f"KNOWN CONTENT: known content: matches banked video {BANKED}" in summary(report)
    assert "match" in report["timings"]
