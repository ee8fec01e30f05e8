"""A reviewer sees which optional parts a scan ran without: the report's `skipped` (schema 1.1)
goes through the API unchanged and the review UI's scan page lists it above the evidence."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from .conftest import Api, fake_report, unique_copy

SKIPPED = [{"part": "fingerprint", "code": "fpcalc_missing",
            "message": "re-upload matching used frame hashes only: audio fingerprinting needs "
                       "Chromaprint's fpcalc: apt-get install libchromaprint-tools"}]


def _finished(api: Api, video: Path, report: dict[str, Any]) -> str:
    with tempfile.TemporaryDirectory() as folder:
        response = api.upload(unique_copy(video, Path(folder)), name=video.name)
    assert response.status_code == 202, response.text
    scan_id: str = response.json()["id"]
    api.service.finish(scan_id, {"report": report})
    return scan_id


def _scan_page(api: Api, scan_id: str) -> str:
    client = api.client
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    client.post("/ui/login", data={"api_key": api.keys["reviewer"], "csrf": token.group(1),
                                   "next": "/ui/"})
    page = client.get(f"/ui/scans/{scan_id}")
    assert page.status_code == 200, page.text
    return page.text


def test_reviewer_sees_what_a_scan_ran_without(api: Api, threat_knife_video: Path) -> None:
    degraded = _finished(api, threat_knife_video,
                         {**fake_report(0.8), "schema_version": "1.1", "skipped": SKIPPED})
    full = _finished(api, threat_knife_video, fake_report(0.8))  # a 1.0 report: no `skipped`
    report = api.client.get(f"/v1/scans/{degraded}/report", headers=api.auth("reviewer"))
    assert report.status_code == 200 and report.json()["skipped"] == SKIPPED
    page = _scan_page(api, degraded)
    assert "Scanned without fingerprint" in page
    assert "apt-get install libchromaprint-tools" in page and "[fpcalc_missing]" in page
    assert "Scanned without" not in _scan_page(api, full)
