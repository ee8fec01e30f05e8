"""The service's bank of removed videos (docs/matching.md): banked videos and their PDQ frame
hashes live in the database (`bank_videos`, `bank_hashes`, SQLite or PostgreSQL alike); lookups
go to an in-memory `pipelines.matching.HashBank` (an exact faiss binary index) that
`DatabaseBank` builds from the tables and brings up to date before each use, reading only rows
added since. A reviewer's "remove" decision banks the scan's hashes from its report; banks are
imported and exported in the documented CSV format."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import IO, Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from pipelines.fusion import FusionOptions, add_known_content
from pipelines.matching import (
    REGION_NAMES,
    BankVideo,
    HashBank,
    audio_from_data,
    frames_from_regions,
    read_bank_rows,
)
from pipelines.types import FusionResult, KnownMatch
from worker.codec import from_data

from .models import BankedHash, BankedVideo


def store_video(session: Session, video: BankVideo, source: str) -> int:
    """Bank `video` (replacing an entry with its id); returns the number of hashes stored."""
    session.execute(delete(BankedHash).where(BankedHash.video_id == video.video_id))
    existing = session.get(BankedVideo, video.video_id)
    audio = [{"start": a.start, "item_s": a.item_s, "items": list(a.items),
              "algorithm": a.algorithm} for a in video.audio]
    if existing is None:
        session.add(BankedVideo(video_id=video.video_id, label=video.label[:200],
                                source=source[:200], audio=audio))
    else:
        existing.label, existing.source, existing.audio = video.label[:200], source[:200], audio
    session.flush()
    rows = [{"video_id": video.video_id, "t": frame.t, "quality": frame.quality,
             "region": region, "pdq": value}
            for frame in video.frames
            for region, value in zip(REGION_NAMES, frame.pdq, strict=True)]
    if rows:
        session.execute(insert(BankedHash), rows)
    return len(rows)


def remove_video(session: Session, video_id: str) -> bool:
    """Take a video out of the bank; False when it was not there."""
    session.execute(delete(BankedHash).where(BankedHash.video_id == video_id))
    found = session.get(BankedVideo, video_id)
    if found is None:
        return False
    session.delete(found)
    return True


def import_csv(session: Session, handle: IO[str], source: str) -> tuple[int, int]:
    """Bank every video of a CSV bank file; returns (videos, hashes)."""
    videos = read_bank_rows(handle, source=source)
    hashes = sum(store_video(session, video, f"import:{source}") for video in videos)
    return len(videos), hashes


def load_videos(session: Session, video_ids: Iterable[str] | None = None) -> list[BankVideo]:
    """Banked videos (all, or those named) with their frame hashes, from the tables."""
    query = select(BankedVideo)
    hash_query = select(BankedHash.video_id, BankedHash.t, BankedHash.quality,
                        BankedHash.region, BankedHash.pdq).order_by(BankedHash.id)
    if video_ids is not None:
        ids = list(video_ids)
        query = query.where(BankedVideo.video_id.in_(ids))
        hash_query = hash_query.where(BankedHash.video_id.in_(ids))
    frames: dict[str, dict[float, dict[str, Any]]] = {}
    for video_id, t, quality, region, pdq in session.execute(hash_query):
        entry = frames.setdefault(video_id, {}).setdefault(t, {"quality": quality})
        entry[region] = pdq
    return [BankVideo(video_id=row.video_id, label=row.label,
                      frames=frames_from_regions(frames.get(row.video_id, {})),
                      audio=tuple(audio_from_data(a) for a in row.audio or []))
            for row in session.scalars(query.order_by(BankedVideo.added_at,
                                                      BankedVideo.video_id))]


_FUSION_FIELDS = {"risk_score", "flagged", "threshold", "signal_scores", "flagged_segments",
                  "reasons"}


def with_known_matches(report: dict[str, Any], matches: Sequence[KnownMatch],
                       options: FusionOptions) -> dict[str, Any]:
    """`report` with `matches` added the way a scan given the bank adds them: its fusion is
    rebuilt from the report, raised by `pipelines.fusion.add_known_content` and written back."""
    # Optional fields of the report (check_report) take the values a scan would have given.
    current = {"threshold": options.threshold, "reasons": [],
               **{k: v for k, v in report.items() if k in _FUSION_FIELDS}}
    current["signal_scores"] = {"weapon": 0.0, "threat_speech": 0.0, "co_occurrence": 0.0,
                                **(report.get("signal_scores") or {})}
    fusion = add_known_content(from_data(FusionResult, current), matches, options)
    updated = dict(report)
    plain = json.loads(json.dumps({"fusion": asdict(fusion),
                                   "matches": [asdict(m) for m in matches]}))
    updated.update({k: v for k, v in plain["fusion"].items() if k in _FUSION_FIELDS})
    updated["known_matches"] = plain["matches"]
    return updated


def export_csv(session: Session, handle: IO[str]) -> int:
    """Write the whole bank as CSV; returns the number of rows."""
    return HashBank(load_videos(session)).write_csv(handle)


class DatabaseBank:
    """An in-memory `HashBank` kept in step with the bank tables: each `current()` reads only
    the videos added since the last call, and rebuilds when videos were removed or replaced."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._bank = HashBank()
        self._seen: tuple[int, int] = (0, 0)  # (videos, highest hash id) at the last refresh
        self._lock = threading.Lock()

    def current(self) -> HashBank:
        """The bank as the tables hold it now."""
        with self._lock, Session(self.engine) as session:
            videos = session.scalar(select(func.count()).select_from(BankedVideo)) or 0
            last = session.scalar(select(func.max(BankedHash.id))) or 0
            if (videos, last) == self._seen:
                return self._bank
            new_ids = set(session.scalars(select(BankedHash.video_id).where(
                BankedHash.id > self._seen[1]).distinct()))
            grown = videos - len(self._bank.videos)
            if videos < len(self._bank.videos) or new_ids & set(self._bank.videos) or (
                    grown != len(new_ids)):
                self._bank = HashBank(load_videos(session))  # removed or replaced: rebuild
            else:
                for video in load_videos(session, new_ids):
                    self._bank.add(video)
            self._seen = (videos, last)
            return self._bank
