"""Re-upload matching: perceptual hashes of the frames and audio a scan already decoded, a bank
of hashes of removed videos, and the matcher that says whether a new upload is one of them.

Frames are hashed with PDQ (Meta's image hash, the one vPDQ applies to every sampled frame of a
video; `pdqhash` computes it) after uniform borders are trimmed, for five regions of the content:
the whole of it, the centre 90 % and 80 %, and 90 % of its height or of its width. A bank keeps
all five; a query looks up its whole-content hash against the bank's whole and cropped hashes
(a crop of up to 10 % matches one of them) and its centre 80 % against the bank's (an overlay
near the edges, such as a caption, stays outside it). Two hashes match at Hamming distance 31 or
less (PDQ's own threshold); frames of PDQ quality under 50 (flat, featureless) never match.

Audio is fingerprinted with Chromaprint (`fpcalc`, the AcoustID fingerprinter) from the 16 kHz
samples the speech stage extracted. Audio only corroborates a visual match: a shared backing
track alone proves nothing.

The matcher aligns matched frames in time (a chain along which both videos advance at about
the same speed, so clips, new intros and speed changes of a few percent still align), and
reports the share of the query's frames that matched, the matched segments in both videos and
an audio score. The bank's in-memory index is a faiss binary index (exact Hamming search);
`HashBank` reads and writes the CSV bank format described in docs/matching.md."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .errors import ScanError
from .types import AudioFingerprint, Frame, FrameHash, KnownMatch, MatchedSegment

# Regions of the frame content each frame is hashed for: (share of height kept, of width kept).
REGIONS = {"full": (1.0, 1.0), "c90": (0.9, 0.9), "c80": (0.8, 0.8), "v90": (0.9, 1.0),
           "h90": (1.0, 0.9)}
REGION_NAMES = tuple(REGIONS)
# A query region matches these bank regions.
QUERY_PAIRS = {"full": ("full", "c90", "v90", "h90"), "c80": ("c80",)}
PDQ_MATCH_DISTANCE = 31  # threatexchange's PDQ_CONFIDENT_MATCH_THRESHOLD
PDQ_MIN_QUALITY = 50  # vPDQ's quality threshold
HASH_MAX_SIDE = 128  # PDQ works on a 64x64 reduction; hashing a smaller image costs less
BORDER_TOLERANCE = 6  # grey levels a border pixel may differ from the border colour
BORDER_SHARE = 0.9  # share of a line's pixels that must be border colour (captions cross bars)
CHROMAPRINT_ITEM_S = 4096 / 11025 / 3  # Chromaprint's hop: 1/3 of a 4096-sample frame at 11025 Hz
SIGNAL_TYPE_PDQ = "pdq"  # threatexchange signal type names (PdqSignal, VideoMD5Signal...)
SIGNAL_TYPE_AUDIO = "chromaprint"
BANK_COLUMNS = ("signal_type", "signal", "video_id", "t", "quality", "region", "label")


class FingerprintUnavailable(ScanError):
    """Audio fingerprinting needs Chromaprint's `fpcalc`, which is not installed."""

    code = "fpcalc_missing"
    exit_code = 3


class BankFormatError(ScanError):
    """A bank file is not in the documented format."""

    code = "invalid_bank"
    exit_code = 2


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """When frames and videos count as matching; the defaults are the tested configuration."""

    max_distance: int = PDQ_MATCH_DISTANCE
    min_quality: int = PDQ_MIN_QUALITY
    min_frames: int = 3  # matched frames along one alignment
    min_share: float = 0.5  # ... and this share of the query's usable frames,
    min_seconds: float = 10.0  # ... or this much matched time (a clip inside a longer video)
    max_gap_s: float = 6.0  # a longer run of unmatched frames starts a new segment
    speed_tolerance: float = 0.1  # banked/scanned speed may differ by this much along a match
    time_slack_s: float = 1.5  # plus this much, for frame sampling and static shots
    hits_per_frame: int = 8  # nearest banked frames per video kept for each query frame
    audio_window: int = 40  # Chromaprint items per compared window (about 5 s)
    audio_max_bit_error: float = 0.3  # unrelated audio differs in about half the bits
    early_frames: int = 5  # aligned frames that answer a re-upload before the scan ends


# ------------------------------------------------------------------------------ hashing


def _border_run(gray: np.ndarray) -> int:
    """How many leading rows of `gray` have the colour of its first row (at most 40 %)."""
    limit = gray.shape[0] * 2 // 5
    colour = int(np.median(gray[0]))
    run = 0
    while run < limit:  # in blocks: most frames have no border, or a thin one
        block = gray[run:min(limit, run + 16)].astype(np.int16)
        flat = (np.abs(block - colour) <= BORDER_TOLERANCE).mean(axis=1) < BORDER_SHARE
        if flat.any():
            return run + int(np.argmax(flat))
        run += len(block)
    return limit


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of `gray` without uniform borders (letterbox bars, added
    padding; nested borders too). A caption crossing a bar does not stop it being a bar."""
    top, bottom, left, right = 0, gray.shape[0], 0, gray.shape[1]
    for _ in range(4):  # nested borders: a coloured pad around black bars
        inner = gray[top:bottom, left:right]
        cuts = (_border_run(inner), _border_run(inner[::-1]), _border_run(inner.T),
                _border_run(inner.T[::-1]))
        if not any(cuts):
            break
        top, bottom, left, right = top + cuts[0], bottom - cuts[1], left + cuts[2], right - cuts[3]
        if bottom - top < 16 or right - left < 16:  # a blank frame: keep it whole
            return 0, gray.shape[0], 0, gray.shape[1]
    return top, bottom, left, right


def hash_image(image: np.ndarray) -> tuple[tuple[str, ...], int]:
    """PDQ hashes (hex, one per region in `REGIONS` order) of a BGR image, and its quality."""
    import pdqhash

    top, bottom, left, right = content_box(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    content = image[top:bottom, left:right]
    height, width = content.shape[:2]
    hashes, quality = [], 0
    for name, (keep_h, keep_w) in REGIONS.items():
        dy, dx = int(round(height * (1 - keep_h) / 2)), int(round(width * (1 - keep_w) / 2))
        region = content[dy:height - dy, dx:width - dx]
        scale = HASH_MAX_SIDE / max(region.shape[:2])
        if scale < 1:
            region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        bits, region_quality = pdqhash.compute(cv2.cvtColor(region, cv2.COLOR_BGR2RGB))
        hashes.append(np.packbits(bits.astype(np.uint8)).tobytes().hex())
        if name == "full":
            quality = int(region_quality)
    return tuple(hashes), quality


def hash_frame(frame: Frame) -> FrameHash:
    """The `FrameHash` of one sampled frame (its BGR image as `sample_frames` yields it)."""
    hashes, quality = hash_image(frame.image)
    return FrameHash(t=frame.t, frame_index=frame.index, quality=quality, pdq=hashes)


def fpcalc_binary() -> str:
    """Path of Chromaprint's fpcalc, or FingerprintUnavailable saying how to install it."""
    found = shutil.which("fpcalc")
    if found is None:
        raise FingerprintUnavailable(
            "audio fingerprinting needs Chromaprint's fpcalc: apt-get install libchromaprint-tools"
            " (or scan with fingerprints off)")
    return found


def fingerprint_audio(samples: np.ndarray, start: float = 0.0, rate: int = 16_000,
                      ) -> AudioFingerprint | None:
    """Chromaprint fingerprint of float32 mono `samples` (as `extract_audio` returns them) that
    begin at `start` seconds of the media; None when there is too little audio (about 3 s)."""
    binary = fpcalc_binary()
    if len(samples) < 3 * rate:
        return None
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    # Raw PCM through a pipe: no temporary file, no second decode of the media.
    done = subprocess.run([binary, "-raw", "-json", "-length", "0", "-format", "s16le", "-rate",
                           str(rate), "-channels", "1", "-"], input=pcm, capture_output=True,
                          timeout=120, check=False)
    # fpcalc 1.5 exits 3 with "Error decoding audio frame (End of file)" at the end of a pipe
    # after printing the fingerprint; the printed fingerprint is what counts.
    try:
        items = json.loads(done.stdout)["fingerprint"] if done.stdout.strip() else []
    except (ValueError, KeyError, TypeError):
        items = []
    if not items:
        if b"Not enough audio" in done.stderr or b"Empty fingerprint" in done.stderr:
            return None
        raise ScanError(f"fpcalc failed: {done.stderr.decode(errors='replace').strip()[-200:]}")
    return AudioFingerprint(start=round(start, 3), item_s=round(CHROMAPRINT_ITEM_S, 6),
                            items=tuple(int(v) for v in items), algorithm="chromaprint2")


def fingerprint_file(path: Path, fps: float = 1.0, max_side: int = 640) -> BankVideo:
    """Hash a video file on its own (frames at `fps`, audio fingerprint), as a `BankVideo`
    named after the file; for adding videos to a bank without scanning them. A scan hashes
    the frames it decodes anyway: use its report instead when there is one."""
    from .media import extract_audio, probe, sample_frames

    info = probe(Path(path))
    frames = tuple(hash_frame(frame) for frame in sample_frames(info, fps, max_side))
    heard = fingerprint_audio(extract_audio(info)) if info.has_audio else None
    return BankVideo(video_id=Path(path).name, label=Path(path).name, frames=frames,
                     audio=(heard,) if heard else ())


def fingerprint_from_report(report: dict[str, Any]
                            ) -> tuple[tuple[FrameHash, ...], tuple[AudioFingerprint, ...]]:
    """The frame hashes and audio fingerprints a JSON report carries (`fingerprint`)."""
    found = report.get("fingerprint") or {}
    frames = tuple(FrameHash(t=float(f["t"]), frame_index=int(f["frame_index"]),
                             quality=int(f["quality"]), pdq=tuple(f["pdq"]))
                   for f in found.get("frames", []))
    return frames, tuple(audio_from_data(a) for a in found.get("audio", []))


def audio_from_data(data: dict[str, Any]) -> AudioFingerprint:
    """An `AudioFingerprint` from its JSON form (`dataclasses.asdict` after a JSON trip)."""
    return AudioFingerprint(start=float(data["start"]), item_s=float(data["item_s"]),
                            items=tuple(int(v) for v in data["items"]),
                            algorithm=str(data["algorithm"]))


def frames_from_regions(by_time: dict[float, dict[str, Any]]) -> tuple[FrameHash, ...]:
    """Frame hashes from {time: {"quality": q, region name: hex, ...}}, in time order. A frame
    with only some regions (a list with one whole-frame hash a frame, as vPDQ or threatexchange
    lists hold) uses its `full` hash, or any one it has, for the others."""
    hashed = []
    for index, (t, entry) in enumerate(sorted(by_time.items())):
        full = str(entry.get("full") or next(v for k, v in entry.items() if k != "quality"))
        hashed.append(FrameHash(t=t, frame_index=index, quality=int(entry["quality"]),
                                pdq=tuple(str(entry.get(name, full)) for name in REGION_NAMES)))
    return tuple(hashed)


# --------------------------------------------------------------------------------- bank


@dataclass(frozen=True, slots=True)
class BankVideo:
    """One video in a bank: its frame hashes and audio fingerprints, and why it is there."""

    video_id: str
    label: str
    frames: tuple[FrameHash, ...]
    audio: tuple[AudioFingerprint, ...] = ()


@dataclass(frozen=True, slots=True)
class FrameHit:
    """A query frame that matched a banked frame."""

    query_t: float
    video_id: str
    bank_t: float
    distance: int


def _hex_rows(hexes: Sequence[str]) -> np.ndarray:
    if not hexes:
        return np.zeros((0, 32), np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hexes)), np.uint8).reshape(len(hexes), 32)


class HashBank:
    """Frame hashes and audio fingerprints of banked videos with an exact Hamming-distance
    index (faiss `IndexBinaryFlat`, 32 bytes a hash, built on the first lookup and extended as
    videos are added). Not thread-safe: one bank per thread or process."""

    def __init__(self, videos: Iterable[BankVideo] = ()) -> None:
        self.videos: dict[str, BankVideo] = {}
        self._ids: list[str] = []  # video number -> id ("" once removed)
        self._rows: list[np.ndarray] = []  # per added block: N x 32 bytes
        self._video: list[np.ndarray] = []  # video number of each row
        self._time: list[np.ndarray] = []
        self._region: list[np.ndarray] = []
        self._index: Any = None
        self._meta: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for video in videos:
            self.add(video)

    def __len__(self) -> int:
        """The number of hashes (frames x regions) in the bank."""
        return sum(len(rows) for rows in self._rows)

    def add(self, video: BankVideo) -> None:
        """Add (or replace) one video; its frames under PDQ quality 50 are kept but not
        indexed (featureless frames, such as black ones, look alike in every video)."""
        hexes, times, regions = [], [], []
        for frame in video.frames:
            if frame.quality < PDQ_MIN_QUALITY:
                continue
            for region, value in enumerate(frame.pdq):
                hexes.append(value)
                times.append(frame.t)
                regions.append(region)
        self._append(video, _hex_rows(hexes), np.array(times, np.float32),
                     np.array(regions, np.int8))

    def add_hashes(self, video_id: str, label: str, rows: np.ndarray, times: np.ndarray,
                   regions: np.ndarray) -> None:
        """Add raw hashes in bulk (rows: N x 32 uint8, with their times and region numbers) as
        one video without audio; for loading large banks and for benchmarks."""
        self._append(BankVideo(video_id=video_id, label=label, frames=()),
                     np.ascontiguousarray(rows, np.uint8), np.asarray(times, np.float32),
                     np.asarray(regions, np.int8))

    def _append(self, video: BankVideo, rows: np.ndarray, times: np.ndarray,
                regions: np.ndarray) -> None:
        if video.video_id in self.videos:
            self.remove(video.video_id)
        self.videos[video.video_id] = video
        self._ids.append(video.video_id)
        self._rows.append(rows)
        self._video.append(np.full(len(rows), len(self._ids) - 1, np.int32))
        self._time.append(times)
        self._region.append(regions)
        if self._index is not None:
            self._index.add(rows)
        self._meta = None

    def remove(self, video_id: str) -> None:
        """Remove one video (the index is rebuilt on the next lookup)."""
        if self.videos.pop(video_id, None) is None:
            return
        code = self._ids.index(video_id)
        keep = [video != code for video in self._video]
        self._rows = [rows[k] for rows, k in zip(self._rows, keep, strict=True)]
        self._time = [t[k] for t, k in zip(self._time, keep, strict=True)]
        self._region = [r[k] for r, k in zip(self._region, keep, strict=True)]
        self._video = [v[k] for v, k in zip(self._video, keep, strict=True)]
        self._ids[code] = ""
        self._index = None

    def _ensure_index(self) -> tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import faiss

        if self._index is None:
            self._index = faiss.IndexBinaryFlat(256)
            if self._rows:
                self._index.add(np.concatenate(self._rows))
            self._meta = None
        if self._meta is None:
            cat = np.concatenate
            self._meta = ((cat(self._video), cat(self._time), cat(self._region)) if self._rows
                          else (np.zeros(0, np.int32), np.zeros(0, np.float32),
                                np.zeros(0, np.int8)))
        return self._index, self._meta

    def lookup(self, frames: Sequence[FrameHash], options: MatchOptions = MatchOptions()
               ) -> list[FrameHit]:
        """Banked frames within `options.max_distance` of each usable query frame, at most
        `options.hits_per_frame` per banked video and query frame, nearest first."""
        usable = [f for f in frames if f.quality >= options.min_quality]
        if not usable or not self._rows:
            return []
        index, (videos, times, regions) = self._ensure_index()
        query_regions = [REGION_NAMES.index(name) for name in QUERY_PAIRS]
        queries = _hex_rows([f.pdq[r] for f in usable for r in query_regions])
        limits, distances, labels = index.range_search(queries, options.max_distance + 1)
        allowed = {REGION_NAMES.index(q): {REGION_NAMES.index(b) for b in banked}
                   for q, banked in QUERY_PAIRS.items()}
        best: dict[tuple[int, int, float], int] = {}
        for row in range(len(queries)):
            frame_no, query_region = divmod(row, len(query_regions))
            ok = allowed[query_regions[query_region]]
            for pos in range(limits[row], limits[row + 1]):
                label = labels[pos]
                if int(regions[label]) not in ok:
                    continue
                key = (frame_no, int(videos[label]), float(times[label]))
                distance = int(distances[pos])
                if distance < best.get(key, 257):
                    best[key] = distance
        per_frame: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for (frame_no, video, bank_t), distance in best.items():
            per_frame.setdefault((frame_no, video), []).append((distance, bank_t))
        hits = []
        for (frame_no, video), found in per_frame.items():
            for distance, bank_t in sorted(found)[:options.hits_per_frame]:
                hits.append(FrameHit(query_t=usable[frame_no].t, video_id=self._ids[video],
                                     bank_t=round(bank_t, 3), distance=distance))
        return sorted(hits, key=lambda h: (h.video_id, h.query_t, h.bank_t))

    # ------------------------------------------------------------------ the file format

    def write_csv(self, handle: IO[str]) -> int:
        """Write the bank in the documented CSV format; returns the number of rows."""
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(BANK_COLUMNS)
        count = 0
        for video in self.videos.values():
            for rows in bank_rows(video):
                writer.writerow(rows)
                count += 1
        return count

    @classmethod
    def read_csv(cls, handle: IO[str], *, source: str = "bank file") -> HashBank:
        """A bank from CSV written by `write_csv` (or by another platform in that format)."""
        bank = cls()
        for video in read_bank_rows(handle, source=source):
            bank.add(video)
        return bank

    @classmethod
    def from_path(cls, path: Path) -> HashBank:
        """Read a bank CSV file; BankFormatError names the problem."""
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                return cls.read_csv(handle, source=path.name)
        except OSError as exc:
            raise BankFormatError(f"{path}: cannot read the bank file ({exc.strerror})") from None


def bank_rows(video: BankVideo) -> Iterable[tuple[str, str, str, str, str, str, str]]:
    """The CSV rows of one banked video: one `pdq` row per frame and region, one
    `chromaprint` row per audio fingerprint (its items as comma-separated integers)."""
    for frame in video.frames:
        for region, value in zip(REGION_NAMES, frame.pdq, strict=True):
            yield (SIGNAL_TYPE_PDQ, value, video.video_id, f"{frame.t:g}", str(frame.quality),
                   region, video.label)
    for audio in video.audio:
        yield (SIGNAL_TYPE_AUDIO, ",".join(map(str, audio.items)), video.video_id,
               f"{audio.start:g}", "", f"{audio.item_s:g}", video.label)


def read_bank_rows(handle: IO[str], *, source: str = "bank file") -> list[BankVideo]:
    """Parse bank CSV rows into videos; a row without a `region` is a whole-frame hash."""
    reader = csv.DictReader(handle)
    missing = {"signal_type", "signal", "video_id"} - set(reader.fieldnames or ())
    if missing:
        raise BankFormatError(f"{source}: not a bank file: the header lacks "
                              f"{', '.join(sorted(missing))} (see docs/matching.md)")
    frames: dict[str, dict[float, dict[str, str | int]]] = {}
    audio: dict[str, list[AudioFingerprint]] = {}
    labels: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        video_id, kind, signal = (row.get(k) or "" for k in ("video_id", "signal_type", "signal"))
        if not video_id or not signal:
            raise BankFormatError(f"{source}, line {line}: video_id and signal are required")
        labels.setdefault(video_id, row.get("label") or source)
        try:
            t = float(row.get("t") or 0.0)
            if kind == SIGNAL_TYPE_PDQ:
                if len(signal) != 64:
                    raise ValueError("a PDQ hash is 64 hex digits")
                bytes.fromhex(signal)
                region = row.get("region") or "full"
                if region not in REGIONS:
                    raise ValueError(f"unknown region {region!r}")
                entry = frames.setdefault(video_id, {}).setdefault(t, {})
                entry[region] = signal.lower()
                entry["quality"] = int(row.get("quality") or 100)
            elif kind == SIGNAL_TYPE_AUDIO:
                items = tuple(int(v) for v in signal.split(","))
                audio.setdefault(video_id, []).append(AudioFingerprint(
                    start=t, item_s=float(row.get("region") or CHROMAPRINT_ITEM_S), items=items,
                    algorithm="chromaprint2"))
            else:
                raise ValueError(f"unsupported signal_type {kind!r} (pdq, chromaprint)")
        except ValueError as exc:
            raise BankFormatError(f"{source}, line {line}: {exc}") from None
    return [BankVideo(video_id=video_id, label=labels[video_id],
                      frames=frames_from_regions(frames.get(video_id, {})),
                      audio=tuple(audio.get(video_id, ()))) for video_id in labels]


# ----------------------------------------------------------------------------- matching


def _chain(hits: Sequence[FrameHit], options: MatchOptions) -> list[FrameHit]:
    """The longest run of hits along which both videos advance together (query times strictly
    increasing, banked time advancing at the query's pace within the speed tolerance)."""
    ordered = sorted(hits, key=lambda h: (h.query_t, h.bank_t))
    # Longest chain first; among equally long ones the one whose banked time keeps the query's
    # pace best (static shots make many chains equally long).
    length = [1] * len(ordered)
    drift = [0.0] * len(ordered)
    parent = [-1] * len(ordered)
    for i, hit in enumerate(ordered):
        for j in range(i - 1, -1, -1):
            prev = ordered[j]
            dq = hit.query_t - prev.query_t
            if dq > options.max_gap_s:
                break
            db = hit.bank_t - prev.bank_t
            if dq <= 0 or db < -options.time_slack_s:
                continue
            deviation = abs(db - dq)
            if deviation > options.time_slack_s + options.speed_tolerance * dq:
                continue
            if (length[j] + 1, -(drift[j] + deviation)) > (length[i], -drift[i]):
                length[i], drift[i], parent[i] = length[j] + 1, drift[j] + deviation, j
    if not ordered:
        return []
    end = max(range(len(ordered)), key=lambda k: (length[k], -drift[k]))
    chain = []
    while end != -1:
        chain.append(ordered[end])
        end = parent[end]
    return chain[::-1]


def _segments(chain: Sequence[FrameHit], interval: float, options: MatchOptions
              ) -> tuple[MatchedSegment, ...]:
    groups: list[list[FrameHit]] = []
    for hit in chain:
        if groups and hit.query_t - groups[-1][-1].query_t <= options.max_gap_s:
            groups[-1].append(hit)
        else:
            groups.append([hit])
    return tuple(MatchedSegment(
        start=g[0].query_t, end=round(g[-1].query_t + interval, 3), bank_start=g[0].bank_t,
        bank_end=round(g[-1].bank_t + interval, 3), frames=len(g),
        mean_distance=round(sum(h.distance for h in g) / len(g), 1)) for g in groups)


def _speed(chain: Sequence[FrameHit]) -> float:
    q = np.array([h.query_t for h in chain])
    b = np.array([h.bank_t for h in chain])
    if len(chain) < 3 or q.max() - q.min() < 5.0:
        return 1.0
    return round(float(np.polyfit(q, b, 1)[0]), 3)


def audio_match_score(query: Sequence[AudioFingerprint], banked: Sequence[AudioFingerprint],
                      options: MatchOptions = MatchOptions()) -> float | None:
    """Share of the query's audio windows (about 5 s each, half overlapping) found in the banked
    audio at any offset with a bit error rate under `options.audio_max_bit_error`; None when
    either side has no fingerprint."""
    size = options.audio_window
    references = [np.array(a.items, np.uint32) for a in banked if len(a.items) >= size]
    windows = [np.array(a.items[i:i + size], np.uint32)
               for a in query for i in range(0, len(a.items) - size + 1, size // 2)]
    if not references or not windows:
        return None
    matched = 0
    for window in windows:
        for reference in references:
            slides = np.lib.stride_tricks.sliding_window_view(reference, size)
            errors = np.bitwise_count(slides ^ window).sum(axis=1) / (32.0 * size)
            if errors.min() <= options.audio_max_bit_error:
                matched += 1
                break
    return round(matched / len(windows), 3)


def match_video(frames: Sequence[FrameHash], audio: Sequence[AudioFingerprint], bank: HashBank,
                *, interval: float, options: MatchOptions = MatchOptions(),
                hits: Sequence[FrameHit] | None = None) -> tuple[KnownMatch, ...]:
    """The banked videos that the video of `frames` (sampled every `interval` seconds) and
    `audio` matches, strongest first. `hits` are `bank.lookup(frames)` when already known."""
    usable = sum(1 for f in frames if f.quality >= options.min_quality)
    if hits is None:
        hits = bank.lookup(frames, options)
    by_video: dict[str, list[FrameHit]] = {}
    for hit in hits:
        by_video.setdefault(hit.video_id, []).append(hit)
    matches = []
    for video_id, found in by_video.items():
        chain = _chain(found, options)
        share = len(chain) / usable if usable else 0.0
        seconds = len(chain) * interval
        if len(chain) < options.min_frames or (share < options.min_share
                                               and seconds < options.min_seconds):
            continue
        video = bank.videos[video_id]
        audio_score = audio_match_score(audio, video.audio, options)
        score = min(1.0, 0.7 + 0.2 * min(1.0, max(share, seconds / 60.0))
                    + 0.1 * (audio_score or 0.0))
        segments = _segments(chain, interval, options)
        spans = ", ".join(f"{s.start:.0f}–{s.end:.0f} s ↔ {s.bank_start:.0f}–{s.bank_end:.0f} s"
                          for s in segments[:3])
        heard = ("" if audio_score is None
                 else f"; audio {audio_score:.0%} the same")
        reason = (f"known content: matches banked video {video_id} ({video.label}): "
                  f"{len(chain)} of {usable} sampled frames ({share:.0%}), {spans}{heard}")
        matches.append(KnownMatch(
            video_id=video_id, label=video.label, score=round(score, 4),
            frame_share=round(share, 4), matched_frames=len(chain),
            matched_seconds=round(seconds, 3), speed=_speed(chain),
            offset=round(chain[0].bank_t - chain[0].query_t, 3), audio_score=audio_score,
            segments=segments, reason=reason))
    return tuple(sorted(matches, key=lambda m: (-m.score, -m.matched_frames, m.video_id)))


class EarlyMatcher:
    """The fast path: fed frame hashes as a scan computes them, it looks each up at once and
    calls `on_match` (once per banked video) as soon as `options.early_frames` frames align
    with a banked video, long before the slower analysis ends."""

    def __init__(self, bank: HashBank, interval: float, on_match: Callable[[KnownMatch], None],
                 options: MatchOptions = MatchOptions()) -> None:
        self.bank, self.interval, self.on_match, self.options = bank, interval, on_match, options
        self.frames: list[FrameHash] = []
        self.hits: list[FrameHit] = []
        self.reported: set[str] = set()

    def __call__(self, frame: FrameHash) -> None:
        """Take the hash of the next sampled frame."""
        self.frames.append(frame)
        found = self.bank.lookup([frame], self.options)
        if not found:
            return
        self.hits += found
        videos = {h.video_id for h in found} - self.reported
        for video_id in sorted(videos):
            chain = _chain([h for h in self.hits if h.video_id == video_id], self.options)
            if len(chain) < self.options.early_frames:
                continue
            early = replace(self.options, min_share=0.0, min_seconds=0.0)
            for match in match_video(self.frames, (), self.bank, interval=self.interval,
                                     options=early, hits=[h for h in self.hits
                                                          if h.video_id == video_id]):
                self.reported.add(video_id)
                self.on_match(match)
