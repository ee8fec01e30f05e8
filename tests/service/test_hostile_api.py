"""Hostile requests against the HTTP API, as an attacker holding an uploader key would send
them (issue 20's review): naming another uploader's stored video, nested metadata, clip ranges
that ffmpeg reads as "to the end", odd dates and cursors, reused idempotency keys. Each test
fails without its fix."""

from __future__ import annotations

from pathlib import Path

from .conftest import Api, fake_report, unique_copy


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_storage_key_is_scoped_to_the_uploader_who_uploaded_it(
        api: Api, benign_street_video: Path, tmp_path: Path) -> None:
    video = unique_copy(benign_street_video, tmp_path)
    mine = api.upload(video).json()
    api.service.finish(mine["id"], {"report": fake_report(0.9)})
    intruder = _bearer(Api.new_key(api, "uploader"))
    stolen = api.client.post("/v1/scans", headers=intruder,
                             json={"storage_key": mine["sha256"]})
    missing = api.client.post("/v1/scans", headers=intruder, json={"storage_key": "0" * 64})
    assert stolen.status_code == 422, stolen.text  # was 202 and then A's report and clips
    assert stolen.json() == missing.json()  # no way to tell "someone else's" from "missing"
    assert api.client.get("/v1/scans", headers=intruder).json()["items"] == []
    # The owner may still name it; a reviewer sees the one scan there is.
    again = api.client.post("/v1/scans", headers=api.auth("uploader"),
                            json={"storage_key": mine["sha256"]})
    assert again.status_code == 200 and again.json()["id"] == mine["id"]
