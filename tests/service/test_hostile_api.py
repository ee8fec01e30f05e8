"""Hostile requests against the HTTP API, as an attacker holding an uploader key would send
them (issue 20's review): naming another uploader's stored video, nested metadata, clip ranges
that ffmpeg reads as "to the end", odd dates and cursors, reused idempotency keys. Each test
fails without its fix."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from service import webhooks
from service.clips import clip_length
from service.errors import ApiError
from service.jsonlimits import nesting_depth
from service.scans import check_clip_range, encode_cursor

from .conftest import Api, Receiver, fake_report, unique_copy


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


def _staged(api: Api) -> list[Path]:
    return list((api.service.storage_root / ".incoming").glob(".upload-*"))


@pytest.mark.parametrize("metadata", [
    '{"a": ' + "[" * 32_000 + "]" * 32_000 + "}",  # was 500 (RecursionError) + a leaked file
    '{"a": ' + "{" * 40 + "}" * 40 + "}",
    '{"a": "' + "[" * 20_000 + '"}',  # brackets inside a string do not nest: valid, too big
])
def test_nested_or_huge_metadata_is_422_and_leaves_nothing_staged(
        api: Api, benign_street_video: Path, metadata: str) -> None:
    with benign_street_video.open("rb") as handle:
        response = api.client.post("/v1/scans", headers=api.auth("uploader"),
                                   files={"file": ("v.mp4", handle, "video/mp4")},
                                   data={"metadata": metadata})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "metadata" in response.json()["error"]["message"]
    assert _staged(api) == []


def test_nested_metadata_in_a_json_reference_is_422(api: Api) -> None:
    body = '{"storage_key": "' + "0" * 64 + '", "metadata": {"a": ' + "[" * 40 + "]" * 40 + "}}"
    response = api.client.post("/v1/scans", headers={**api.auth("uploader"),
                                                     "Content-Type": "application/json"},
                               content=body)
    assert response.status_code == 422, response.text
    assert "deeper" in response.text


def test_stale_staged_uploads_are_swept_while_the_service_runs(make_api: Any) -> None:
    with make_api(staging_max_age_s=3.0) as api:
        staging = api.service.storage_root / ".incoming"
        staging.mkdir(parents=True, exist_ok=True)
        old = staging / ".upload-leftover"
        old.mkdir()
        (old / "upload").write_bytes(b"x" * 1000)
        os.utime(old, (time.time() - 60, time.time() - 60))
        fresh = staging / ".upload-receiving"
        fresh.mkdir()
        deadline = time.monotonic() + 10
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not old.exists() and fresh.exists()
        fresh.rmdir()


@pytest.mark.parametrize(("start", "end", "result"), [
    (1.0, 1.0001, "invalid_range"),  # was `-t 0.000`: ffmpeg cut to the end (5 s of 6)
    (1.0, 1.05, "invalid_range"),
    (2.0, 2.0, "invalid_range"),
    (3.0, 2.0, "invalid_range"),
    (6.0, 7.0, "invalid_range"),  # starts at the end
    (0.0, 31.0, "clip_too_long"),
    (float("nan"), 2.0, "invalid_range"),
    (0.0, float("inf"), "invalid_range"),
    (1.0, 1.1, (1.0, 1.1)),
    (5.5, 9.0, (5.5, 6.0)),  # an end past the video is cut back to its end
    (0.0, 30.0, (0.0, 6.0)),
])
def test_clip_ranges_are_checked_before_ffmpeg_runs(start: float, end: float,
                                                    result: Any) -> None:
    if isinstance(result, str):
        with pytest.raises(ApiError) as refused:
            check_clip_range(start, end, 6.0, 30.0)
        assert refused.value.status == 422 and refused.value.code == result
    else:
        assert check_clip_range(start, end, 6.0, 30.0) == pytest.approx(result)


def test_a_clip_is_never_longer_than_asked(api: Api, benign_street_video: Path,
                                           tmp_path: Path) -> None:
    video = unique_copy(benign_street_video, tmp_path)
    scan_id = api.upload(video).json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.9)})
    tiny = api.client.get(f"/v1/scans/{scan_id}/clip?start=1&end=1.0001",
                          headers=api.auth("uploader"))
    assert tiny.status_code == 422 and tiny.json()["error"]["code"] == "invalid_range"
    response = api.client.get(f"/v1/scans/{scan_id}/clip?start=1&end=3",
                              headers=api.auth("uploader"))
    assert response.status_code == 200, response.text
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(response.content)
    assert 1.5 <= clip_length(clip) <= 2.5


@pytest.mark.parametrize(("address", "public"), [
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1: was accepted
    ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1: was accepted
    ("::127.0.0.1", False),  # IPv4-compatible 127.0.0.1: was accepted
    ("::ffff:10.0.0.1", False), ("64:ff9b::a9fe:a9fe", False), ("2002:c0a8:101::1", False),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("100.64.0.1", False), ("192.0.0.1", False), ("198.18.0.1", False), ("240.0.0.1", False),
    ("0.0.0.0", False), ("::", False), ("fe80::1%eth0", False), ("fd00::1", False),
    ("2001:db8::1", False), ("ff02::1", False), ("not an address", False),
    ("8.8.8.8", True), ("2606:4700::1111", True), ("64:ff9b::808:808", True),
    ("2002:808:808::", True),
])
def test_callback_addresses_are_checked_with_embedded_ipv4_normalised(address: str,
                                                                      public: bool) -> None:
    assert webhooks.public_address(address) is public


@pytest.mark.parametrize("url", ["http://[64:ff9b::7f00:1]/hook", "http://[2002:7f00:1::]/hook",
                                 "http://[::127.0.0.1]/hook", "http://0.0.0.0:8000/hook"])
def test_embedded_loopback_callback_urls_are_refused(make_api: Any, benign_street_video: Path,
                                                     url: str) -> None:
    with make_api(webhook_allow_private=False) as api:
        response = api.upload(benign_street_video, callback_url=url)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "callback_url_refused"


def test_webhook_connects_to_the_address_it_checked(receiver: Receiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name is resolved once per attempt and the request goes to that
    checked address; a second lookup (by the HTTP client) would get a different answer."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hook.rebind.test":
            lookups.append(host)
            if len(lookups) > 1:  # the attacker's DNS now points elsewhere
                raise socket.gaierror(socket.EAI_NONAME, "rebound")
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = receiver.server.server_address[1]
    attempts: list[webhooks.Attempt] = []
    delivered = webhooks.deliver(f"http://hook.rebind.test:{port}/hook", b"{}", "secret",
                                 allow_private=True, max_attempts=1, backoff=0, timeout=5,
                                 record=attempts.append)
    assert delivered, attempts
    assert lookups == ["hook.rebind.test"]
    headers, _ = receiver.requests[0]
    assert headers["host"] == f"hook.rebind.test:{port}"


def test_webhook_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.statuses.append(307)
    attempts: list[webhooks.Attempt] = []
    assert not webhooks.deliver(receiver.url, b"{}", "secret", allow_private=True,
                                max_attempts=1, backoff=0, timeout=5, record=attempts.append)
    assert attempts[0].status_code == 307 and len(receiver.requests) == 1


@pytest.mark.parametrize("params", [
    {"created_after": "0001-01-01T00:00:00+05:00"},  # was 500 (OverflowError)
    {"created_before": "9999-12-31T23:59:59-05:00"},
    {"cursor": encode_cursor("0001-01-01T00:30:00+01:00", "x")},
    {"cursor": encode_cursor("9999-12-31T23:30:00-01:00", "x")},
])
def test_dates_at_the_ends_of_the_calendar_are_422(api: Api, params: dict[str, str]) -> None:
    response = api.client.get("/v1/scans", headers=api.auth("reviewer"), params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_request", "invalid_cursor")


@pytest.mark.parametrize("last_id", [10**30, -1, True])
def test_audit_cursors_outside_database_integers_are_422(api: Api, last_id: Any) -> None:
    response = api.client.get("/v1/audit", headers=api.auth("reviewer"),
                              params={"cursor": encode_cursor(last_id)})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_cursor"


def test_api_responses_are_not_cached_or_sniffed(api: Api, benign_street_video: Path,
                                                  tmp_path: Path) -> None:
    scan_id = api.upload(unique_copy(benign_street_video, tmp_path)).json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.9)})
    reviewer = api.auth("reviewer")
    for response in (api.client.get(f"/v1/scans/{scan_id}", headers=reviewer),
                     api.client.get(f"/v1/scans/{scan_id}/report", headers=reviewer),
                     api.client.get(f"/v1/scans/{scan_id}/clip?start=0&end=1", headers=reviewer),
                     api.client.get("/v1/scans"),  # 401
                     api.client.get("/v1/nothing"),  # 404
                     api.client.get("/v1/scans?x=%00"),  # refused before routing
                     api.client.get("/openapi.json")):
        assert response.headers.get("cache-control") == "no-store", response.url
        assert response.headers.get("x-content-type-options") == "nosniff", response.url


def test_cut_clip_refuses_a_range_that_would_round_to_nothing(benign_street_video: Path
                                                               ) -> None:
    from service.clips import cut_clip

    for start, end in ((1.0, 1.0001), (1.0, 1.0), (-1.0, 2.0), (0.0, float("nan"))):
        with pytest.raises(ValueError, match="at least"):
            cut_clip(benign_street_video, start, end)  # was `-t 0.000`: the rest of the video


@pytest.mark.parametrize(("text", "depth"), [
    ("{}", 1), ("[[[]]]", 3), ('{"a": [1, {"b": []}]}', 4), ('"[[[["', 0),
    ('{"a": "x\\\\"}', 1), ('{"a": "\\\\"[["}', 3), ('{"a": "\\"[["}', 1),
    ('["unterminated [[[', 1), ("", 0),
    ("42", 0), ("[" * 40_000, 40_000), ("]]][[", 0),
])
def test_nesting_depth_ignores_brackets_inside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth
