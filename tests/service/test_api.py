"""The HTTP API against SQLite and a real PostgreSQL (parametrised by `database_url`): uploads,
idempotency, limits, visibility, listing, reports, decisions, the audit log, keys, webhooks and
JSON errors. Scans are queued but not run here; `fake_report` stands in for a finished scan
(the real round trip is in test_roundtrip.py)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service import webhooks
from service.models import AppendOnlyError, AuditEntry, Base
from service.openapi import SPEC_PATH, render, spec

from .conftest import WEBHOOK_SECRET, Api, Receiver, fake_report, unique_copy


def finished_scan(api: Api, video: Path, risk: float = 0.8, **fields: Any) -> str:
    """Upload a unique copy of `video` and finish its scan with a synthetic report; returns
    the scan id."""
    with tempfile.TemporaryDirectory() as folder:
        response = api.upload(unique_copy(video, Path(folder)), name=video.name, **fields)
    assert response.status_code == 202, response.text
    scan_id: str = response.json()["id"]
    api.service.finish(scan_id, {"report": fake_report(risk)})
    return scan_id


def test_checked_in_openapi_spec_is_the_apps() -> None:
    assert SPEC_PATH.read_text(encoding="utf-8") == render(spec()), \
        "docs/openapi.json is stale: run `python -m service.openapi`"


def test_migrations_create_exactly_the_models(api: Api) -> None:
    with api.service.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_upload_is_accepted_probed_and_stored_by_hash(api: Api, benign_street_video: Path
                                                      ) -> None:
    response = api.upload(benign_street_video, name="../../etc/passwd; rm -rf ü.mp4",
                          external_id="ext-1", priority="high", metadata={"channel": 7})
    assert response.status_code == 202, response.text
    scan = response.json()
    assert response.headers["location"] == f"/v1/scans/{scan['id']}"
    assert scan["status"] == "queued" and scan["priority"] == "high"
    assert scan["filename"] == "passwd; rm -rf ü.mp4"  # display only
    assert scan["duration"] == pytest.approx(16.0, abs=0.1)
    assert scan["metadata"] == {"channel": 7} and scan["external_id"] == "ext-1"
    stored = api.service.storage.local_path(scan["sha256"])
    assert stored.name == scan["sha256"] and stored.read_bytes() == benign_street_video.read_bytes()
    assert not any((api.service.storage_root / ".incoming").iterdir())  # staging cleaned


def test_same_content_gives_the_same_scan(api: Api, benign_slang_video: Path) -> None:
    first = api.upload(benign_slang_video)
    again = api.upload(benign_slang_video, name="other-name.mp4")
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    other_uploader = Api.new_key(api, "uploader")
    theirs = api.client.post("/v1/scans", headers={"Authorization": f"Bearer {other_uploader}"},
                             files={"file": ("v.mp4", benign_slang_video.read_bytes())})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_idempotency_key_returns_the_first_scan(api: Api, music_only_video: Path,
                                                kitchen_benign_video: Path) -> None:
    headers = {"Idempotency-Key": "upload-42"}
    first = api.upload(music_only_video, headers=headers)
    retry = api.upload(music_only_video, headers=headers, name="renamed.mp4")
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.json()["id"] == first.json()["id"]
    other = api.upload(kitchen_benign_video, headers=headers)  # was 200 with the first scan
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert not any((api.service.storage_root / ".incoming").iterdir())
    reference = api.client.post("/v1/scans", headers={**api.auth("uploader"), **headers},
                                json={"storage_key": "1" * 64})
    assert reference.status_code == 409


def test_a_failed_scan_can_be_submitted_again(api: Api, weapon_silent_video: Path) -> None:
    first = api.upload(weapon_silent_video).json()
    api.service.finish(first["id"], {"error": {"code": "internal_error", "message": "boom"}})
    failed = api.client.get(f"/v1/scans/{first['id']}", headers=api.auth("uploader")).json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "internal_error", "message": "boom", "details": None}
    again = api.upload(weapon_silent_video)
    assert again.status_code == 202 and again.json()["id"] != first["id"]


def test_an_earlier_result_is_reused_not_rescanned(api: Api, threat_speech_only_video: Path,
                                                   tmp_path: Path) -> None:
    video = unique_copy(threat_speech_only_video, tmp_path)
    scan_id = api.upload(video).json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.66)})
    other = Api.new_key(api, "uploader")
    response = api.client.post("/v1/scans", headers={"Authorization": f"Bearer {other}"},
                               files={"file": ("x.mp4", video.read_bytes())})
    reused = response.json()
    assert reused["id"] != scan_id and reused["status"] == "done"
    assert reused["risk_score"] == 0.66 and len(reused["segments"]) == 1


@pytest.mark.parametrize(("content", "status", "code"), [
    (b"", 422, "invalid_media"),
    (b"this is a text file renamed to .mp4\n", 422, "invalid_media"),
    (b"\x00\x00\x00\x18ftypmp42" + bytes(2000), 422, "invalid_media"),  # no moov: truncated
])
def test_bad_media_is_refused_with_a_stable_code(api: Api, content: bytes, status: int,
                                                  code: str) -> None:
    response = api.client.post("/v1/scans", headers=api.auth("uploader"),
                               files={"file": ("video.mp4", content, "video/mp4")})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text and str(api.service.storage_root) not in response.text


def test_audio_only_is_unsupported(api: Api, tmp_path: Path, threat_knife_video: Path) -> None:
    import subprocess

    audio = tmp_path / "audio.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(threat_knife_video), "-vn", "-t", "2",
                    "-c:a", "aac", str(audio)], check=True)
    response = api.upload(audio)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unsupported_media"


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(make_api: Any,
                                                               benign_street_video: Path) -> None:
    with make_api(max_upload_bytes=100_000) as api:
        response = api.upload(benign_street_video)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "upload_too_large"
        assert not any((api.service.storage_root / ".incoming").iterdir())


def test_video_over_the_duration_limit_is_413(make_api: Any, kitchen_benign_video: Path) -> None:
    with make_api(max_duration=5.0) as api:
        response = api.upload(kitchen_benign_video)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "media_too_large"
        assert "min limit" in response.json()["error"]["message"]


def test_submit_by_storage_reference(api: Api, threat_gun_drill_video: Path,
                                     tmp_path: Path) -> None:
    # A key may name only content it uploaded: upload, fail the scan, then submit it again.
    first = api.upload(unique_copy(threat_gun_drill_video, tmp_path)).json()
    api.service.finish(first["id"], {"error": {"code": "internal_error", "message": "boom"}})
    key = first["sha256"]
    body = {"storage_key": key, "filename": "drill.mp4", "external_id": "ref-1"}
    response = api.client.post("/v1/scans", headers=api.auth("uploader"), json=body)
    assert response.status_code == 202, response.text
    assert response.json()["sha256"] == key and response.json()["filename"] == "drill.mp4"
    missing = api.client.post("/v1/scans", headers=api.auth("uploader"),
                              json={"storage_key": "0" * 64})
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "storage_key_not_found"
    sneaky = api.client.post("/v1/scans", headers=api.auth("uploader"),
                             json={"storage_key": "../../etc/passwd"})
    assert sneaky.status_code == 422 and sneaky.json()["error"]["code"] == "invalid_request"


def test_other_content_types_are_415(api: Api) -> None:
    response = api.client.post("/v1/scans", headers={**api.auth("uploader"),
                                                     "Content-Type": "video/mp4"}, content=b"x")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook",
                                 "http://[::1]/hook", "http://169.254.169.254/latest",
                                 "file:///etc/passwd", "gopher://example.com/"])
def test_private_or_odd_callback_urls_are_refused(make_api: Any, benign_street_video: Path,
                                                  url: str) -> None:
    with make_api(webhook_allow_private=False) as api:
        response = api.upload(benign_street_video, callback_url=url)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "callback_url_refused"


ROUTES = [  # method, path template, body
    ("POST", "/v1/scans", None),
    ("GET", "/v1/scans", None),
    ("GET", "/v1/scans/{id}", None),
    ("GET", "/v1/scans/{id}/report", None),
    ("GET", "/v1/scans/{id}/frames/5", None),
    ("GET", "/v1/scans/{id}/clip?start=4&end=6", None),
    ("POST", "/v1/scans/{id}/decisions", {"action": "allow", "reason": "fine"}),
    ("GET", "/v1/audit", None),
    ("POST", "/v1/keys", {"role": "uploader"}),
    ("GET", "/v1/keys", None),
    ("DELETE", "/v1/keys/nokey", None),
]
DENIED = {  # role -> routes it must be refused (403)
    "uploader": {"/v1/scans/{id}/decisions", "/v1/audit", "/v1/keys", "/v1/keys/nokey"},
    "reviewer": {("POST", "/v1/scans"), "/v1/keys", "/v1/keys/nokey"},
    "admin": {("POST", "/v1/scans"), "/v1/scans/{id}/decisions"},
}


def test_auth_matrix(api: Api, benign_street_video: Path) -> None:
    scan_id = finished_scan(api, benign_street_video, risk=0.1)
    for method, template, body in ROUTES:
        path = template.format(id=scan_id)
        for headers, expected in (({}, 401), ({"Authorization": "Bearer isk_nope_nope"}, 401),
                                  ({"Authorization": "Basic dXNlcjpwYXNz"}, 401)):
            response = api.client.request(method, path, headers=headers, json=body)
            assert response.status_code == expected, (method, path, headers)
            assert response.json()["error"]["code"] in ("unauthorized", "invalid_key")
        for role, denied in DENIED.items():
            refused = template in denied or (method, template) in denied
            response = api.client.request(method, path, headers=api.auth(role), json=body)
            if refused:
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.json()["error"]["code"] == "forbidden"
            else:
                assert response.status_code not in (401, 403), (role, method, path,
                                                                 response.text)


def test_uploaders_see_only_their_own_scans(api: Api, benign_street_video: Path) -> None:
    scan_id = finished_scan(api, benign_street_video)
    other = {"Authorization": f"Bearer {Api.new_key(api, 'uploader')}"}
    for path in (f"/v1/scans/{scan_id}", f"/v1/scans/{scan_id}/report",
                 f"/v1/scans/{scan_id}/clip?start=0&end=2"):
        response = api.client.get(path, headers=other)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.client.get("/v1/scans", headers=other).json()["items"] == []
    mine = api.client.get("/v1/scans", headers=api.auth("uploader")).json()["items"]
    assert [s["id"] for s in mine] == [scan_id]
    assert api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("reviewer")).status_code == 200


def test_listing_filters_and_paginates(api: Api, samples: list[Path]) -> None:
    tag = f"list-{api.key_id('uploader')}"
    ids = {}
    for index, video in enumerate(samples[:5]):
        risk = [0.1, 0.3, 0.5, 0.7, 0.9][index]
        ids[risk] = finished_scan(api, video, risk=risk, external_id=tag)
    headers = api.auth("reviewer")

    def listed(**params: Any) -> list[str]:
        page = api.client.get("/v1/scans", headers=headers,
                              params={"external_id": tag, **params})
        assert page.status_code == 200, page.text
        return [s["id"] for s in page.json()["items"]]

    assert set(listed(min_score=0.5)) == {ids[0.5], ids[0.7], ids[0.9]}
    assert set(listed(min_score=0.2, max_score=0.6)) == {ids[0.3], ids[0.5]}
    assert listed(status="queued") == [] and len(listed(status="done")) == 5
    assert listed(created_after="2999-01-01T00:00:00Z") == []
    assert len(listed(created_before="2999-01-01T00:00:00Z")) == 5
    seen, cursor = [], None
    while True:
        params = {"external_id": tag, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/scans", headers=headers, params=params).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and set(seen) == set(ids.values())  # every scan once, no repeats
    bad = api.client.get("/v1/scans", headers=headers, params={"cursor": "garbage"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"
    naive = api.client.get("/v1/scans", headers=headers,
                           params={"created_after": "2020-01-01T00:00:00"})
    assert naive.status_code == 422


def test_report_decision_and_audit(api: Api, threat_knife_video: Path, tmp_path: Path) -> None:
    pending = api.upload(unique_copy(threat_knife_video, tmp_path), name="threat_knife.mp4"
                         ).json()["id"]
    early = api.client.get(f"/v1/scans/{pending}/report", headers=api.auth("reviewer"))
    assert early.status_code == 409 and early.json()["error"]["code"] == "scan_not_finished"
    api.service.finish(pending, {"report": fake_report(0.9, segments=2)})
    reviewer = api.auth("reviewer")
    report = api.client.get(f"/v1/scans/{pending}/report", headers=reviewer).json()
    assert report["risk_score"] == 0.9 and report["video"]["path"] == "threat_knife.mp4"
    decision = {"action": "remove", "reason": "credible threat", "note": "knife and threat",
                "segment_marks": [{"segment": 1, "correct": False,
                                   "comment": "wrong: this is a phone, not a gun"}]}
    made = api.client.post(f"/v1/scans/{pending}/decisions", headers=reviewer, json=decision)
    assert made.status_code == 201, made.text
    assert made.json()["segment_marks"][0]["comment"].startswith("wrong")
    scan = api.client.get(f"/v1/scans/{pending}", headers=api.auth("uploader")).json()
    assert [d["action"] for d in scan["decisions"]] == ["remove"]
    assert [s["index"] for s in scan["segments"]] == [0, 1]
    unknown = api.client.post(f"/v1/scans/{pending}/decisions", headers=reviewer,
                              json={**decision, "segment_marks": [{"segment": 7,
                                                                   "correct": True}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_segment"
    audit = api.client.get("/v1/audit", headers=api.auth("admin"),
                           params={"actor": api.key_id("reviewer")}).json()["items"]
    actions = [entry["action"] for entry in audit]
    assert actions == ["decision.create", "report.view"]  # the refused early read left none
    assert audit[0]["target"] == f"scan:{pending}"
    with api.service.sessions() as session:
        evidence = session.execute(sa.text("SELECT kind, label FROM evidence WHERE scan_id = :s "
                                           "ORDER BY id"), {"s": pending}).all()
    assert [tuple(row) for row in evidence] == [("detection", "knife"), ("threat_hit", "threat")
                                                ] * 2


def test_audit_log_is_append_only(api: Api) -> None:
    with api.service.sessions() as session:
        entry = session.scalars(sa.select(AuditEntry).limit(1)).one()
        entry.action = "forged"
        with pytest.raises(AppendOnlyError):
            session.flush()
        session.rollback()
        with pytest.raises(AppendOnlyError):
            session.execute(sa.delete(AuditEntry))
    for statement in ("UPDATE audit_log SET action = 'forged'", "DELETE FROM audit_log"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), \
                api.service.engine.begin() as connection:
            connection.execute(sa.text(statement))


def test_keys_are_created_hashed_and_revocable(api: Api) -> None:
    created = api.client.post("/v1/keys", headers=api.auth("admin"),
                              json={"role": "uploader", "name": "partner"})
    assert created.status_code == 201
    key = created.json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert api.client.get("/v1/scans", headers=headers).status_code == 200
    with api.service.sessions() as session:
        stored = session.execute(sa.text("SELECT secret_hash, salt FROM api_keys WHERE id = :i"),
                                 {"i": created.json()["id"]}).one()
    assert key.split("_")[-1] not in stored and all(len(v) in (32, 64) for v in stored)
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert api.client.get("/v1/scans", headers={"Authorization": f"Bearer {wrong}"}
                          ).status_code == 401
    listed = api.client.get("/v1/keys", headers=api.auth("admin")).json()
    assert "key" not in listed[0] and any(k["id"] == created.json()["id"] for k in listed)
    revoked = api.client.delete(f"/v1/keys/{created.json()['id']}", headers=api.auth("admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert api.client.get("/v1/scans", headers=headers).status_code == 401


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/nowhere", 404, "not_found"),
    ("PUT", "/v1/scans", 405, "method_not_allowed"),
    ("GET", "/v1/scans?limit=0", 422, "invalid_request"),
    ("GET", "/v1/scans?min_score=abc", 422, "invalid_request"),
    ("GET", "/v1/scans?status=bogus", 422, "invalid_request"),
    ("GET", "/v1/scans?external_id=a%00b", 422, "invalid_request"),  # PostgreSQL can't hold NUL
    ("GET", "/v1/scans/abc%00", 422, "invalid_request"),
])
def test_errors_are_json_with_a_stable_code(api: Api, method: str, path: str, status: int,
                                            code: str) -> None:
    response = api.client.request(method, path, headers=api.auth("reviewer"))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_invalid_form_fields_are_422(api: Api, benign_street_video: Path) -> None:
    for fields in ({"priority": "urgent"}, {"surprise": "x"}, {"metadata": "[1, 2]"},
                   {"external_id": "a\x00b"}, {"metadata": '{"a": "\\u0000"}'}):
        with benign_street_video.open("rb") as handle:
            response = api.client.post("/v1/scans", headers=api.auth("uploader"),
                                       files={"file": ("v.mp4", handle)}, data=fields)
        assert response.status_code == 422, fields
        assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(("header", "valid"), [
    ("GOOD", True),
    ("t=1700000000,v1=" + "0" * 64, False),  # wrong mac
    ("v1=abc", False),
    ("garbage", False),
    ("STALE", False),
])
def test_webhook_signature_verification(header: str, valid: bool) -> None:
    body = b'{"event": "scan.finished"}'
    now = 1_700_000_000
    if header == "GOOD":
        header = webhooks.sign("s3cret", body, now)
    elif header == "STALE":
        header = webhooks.sign("s3cret", body, now - 3600)
    assert webhooks.verify("s3cret", body, header, now=now) is valid
    assert not webhooks.verify("other", body, webhooks.sign("s3cret", body, now), now=now)


def test_webhook_is_retried_signed_and_recorded(api: Api, receiver: Receiver,
                                                benign_slang_video: Path) -> None:
    receiver.statuses = [500, 503]  # two failures, then 200
    scan_id = finished_scan(api, benign_slang_video, risk=0.2, callback_url=receiver.url,
                            external_id="hook-1")
    assert receiver.received.wait(20)
    assert len(receiver.requests) == 3
    headers, body = receiver.requests[-1]
    assert webhooks.verify(WEBHOOK_SECRET, body, headers["x-incitementscan-signature"])
    payload = json.loads(body)
    assert payload["event"] == "scan.finished" and payload["scan"]["id"] == scan_id
    assert payload["scan"]["external_id"] == "hook-1" and payload["scan"]["status"] == "done"
    for _ in range(100):  # the last attempt is recorded just after the receiver answers
        webhook = api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("uploader")
                                 ).json()["webhook"]
        if webhook["delivered"]:
            break
        time.sleep(0.05)
    assert webhook["attempts"] == 3 and webhook["delivered"] and webhook["last_status_code"] == 200
