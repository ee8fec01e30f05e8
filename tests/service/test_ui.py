"""The reviewer web UI end to end: the real app under uvicorn on 127.0.0.1, two sample videos
scanned for real by the local executor (a gun-drill threat clip and a benign street clip), and
a real headless Chromium (the Debian `chromium` package, driven by Playwright) that logs in,
works the queue with the keyboard, seeks the player from the timeline and transcript, and
records a decision that then shows in the audit log and the API. Screenshots of the queue and
scan page are written to docs/screenshots/ for the README."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api import create_app
from service.scans import ScanService
from service.schemas import KeyIn
from service.settings import ServiceSettings
from service.ui import SessionSigner, highlight, signal_class

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Functions, not expressions: Playwright evaluates a bare expression with eval(), which the
# UI's Content-Security-Policy (rightly) refuses.
IMAGES_LOADED = "() => [...document.images].every(i => i.complete)"
PLAYER_AT = "(t) => Math.abs(document.getElementById('player').currentTime - t) < 0.05"

slow = pytest.mark.slow  # the tests on the running site scan two videos first


def _need_browser() -> None:
    problem = None
    if not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing: `apt-get install -y chromium` (scripts/install.sh)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed: `pip install -e '.[test]'`"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


@dataclass
class Site:
    """The running app: its base URL, service, a key per role and the seeded scan ids."""

    url: str
    service: ScanService
    keys: dict[str, str]
    threat_scan: str
    benign_scan: str

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def key_id(self, role: str) -> str:
        principal = self.service.authenticate(self.keys[role])
        assert principal is not None
        return principal.key_id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_done(client: httpx.Client, scan_id: str, headers: dict[str, str],
               timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        scan: dict[str, Any] = client.get(f"/v1/scans/{scan_id}", headers=headers).json()
        if scan["status"] in ("done", "failed") or time.monotonic() > deadline:
            return scan
        time.sleep(1.0)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, threat_gun_drill_video: Path,
         benign_street_video: Path) -> Iterator[Site]:
    """The app served by uvicorn with two finished real scans (threat_gun_drill: weapons and
    threats, evidence frames; benign_street: nothing flagged)."""
    _need_browser()
    import uvicorn

    folder = tmp_path_factory.mktemp("ui")
    settings = ServiceSettings(database_url=f"sqlite:///{folder / 'ui.db'}",
                               storage=folder / "storage", local_workers=1,
                               speech_model="tiny.en")
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.1)
    try:
        service: ScanService = app.state.service
        keys = {role: service.create_key(None, KeyIn(role=role, name=f"ui {role}")).key  # type: ignore[arg-type]
                for role in ("uploader", "reviewer", "admin")}
        url = f"http://127.0.0.1:{port}"
        uploader = {"Authorization": f"Bearer {keys['uploader']}"}
        with httpx.Client(base_url=url, timeout=60) as client:
            ids = []
            for video in (threat_gun_drill_video, benign_street_video):
                with video.open("rb") as handle:
                    response = client.post("/v1/scans", headers=uploader,
                                           files={"file": (video.name, handle, "video/mp4")})
                assert response.status_code in (200, 202), response.text
                ids.append(response.json()["id"])
            for scan_id in ids:
                assert _wait_done(client, scan_id, uploader)["status"] == "done"
        yield Site(url, service, keys, threat_scan=ids[0], benign_scan=ids[1])
    finally:
        server.should_exit = True
        thread.join(60)


def _login(client: httpx.Client, key: str) -> httpx.Response:
    """Log in through the form as a browser would (CSRF cookie, then POST)."""
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    return client.post("/ui/login", data={"api_key": key, "csrf": token.group(1),
                                          "next": "/ui/"})


HIT = {"start": 4.0, "end": 5.0, "text": "wet him up", "rule": "pattern:x", "category": "threat",
       "meaning": "a threat"}


@pytest.mark.parametrize(("text", "hits", "expected"), [
    ("We are gonna wet him up", [HIT], ["We are gonna ", "[wet him up]"]),
    ("We are gonna WET HIM UP today", [HIT], ["We are gonna ", "[WET HIM UP]", " today"]),
    ("We are gonna wet him up", [{**HIT, "start": 30.0, "end": 31.0}],
     ["We are gonna wet him up"]),  # another line's hit
    ("wet him up, wet him up", [HIT, HIT], ["[wet him up]", ", wet him up"]),  # no overlap
    ("nothing here", [HIT], ["nothing here"]),
])
def test_transcript_lines_highlight_the_words_of_their_hits(
        text: str, hits: list[dict[str, Any]], expected: list[str]) -> None:
    parts = highlight(text, 3.5, 6.0, hits)
    assert [f"[{p['text']}]" if p["hit"] else p["text"] for p in parts] == expected


@pytest.mark.parametrize(("signals", "css"), [
    (["weapon"], "weapon"), (["threat_speech"], "speech"),
    (["weapon", "threat_speech", "co_occurrence"], "both"), ([], "other"),
])
def test_segments_are_coloured_by_signal(signals: list[str], css: str) -> None:
    assert signal_class(signals) == css


def test_session_cookies_cannot_be_forged_or_outlive_their_time() -> None:
    signer = SessionSigner()
    cookie = signer.dump("key1")
    session = signer.load(cookie)
    assert session is not None and session["k"] == "key1"
    assert signer.csrf_token(session) != SessionSigner().csrf_token(session)
    payload, _, mac = cookie.partition(".")
    assert signer.load(cookie.replace(payload, payload[:-2] + "xx")) is None
    assert SessionSigner().load(cookie) is None  # another server's secret
    assert signer.load("garbage") is None and signer.load(f"{payload}.") is None
    expired = signer.dump("key1")
    body = json.loads(base64.urlsafe_b64decode(expired.split(".")[0] + "=="))
    stale = base64.urlsafe_b64encode(json.dumps({**body, "e": 1}).encode()).decode().rstrip("=")
    assert signer.load(f"{stale}.{signer._mac(stale)}") is None


def test_a_configured_session_secret_is_shared_by_server_processes() -> None:
    cookie = SessionSigner(b"configured secret").dump("key1")
    session = SessionSigner(b"configured secret").load(cookie)  # another process, same secret
    assert session is not None and session["k"] == "key1"
    assert SessionSigner(b"another secret").load(cookie) is None


@slow
def test_uploader_key_cannot_open_the_ui(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        assert client.get("/ui/").status_code == 303  # not logged in: to the login page
        refused = _login(client, site.keys["uploader"])
        assert refused.status_code == 403 and "cannot open the reviewer UI" in refused.text
        assert "isk_ui_session" not in client.cookies
        assert client.get("/ui/").headers["location"].startswith("/ui/login")
        assert _login(client, "isk_nope_nope").status_code == 401
    with httpx.Client(base_url=site.url) as client:  # admins may look but not decide
        assert _login(client, site.keys["admin"]).status_code == 303
        page = client.get(f"/ui/scans/{site.benign_scan}")
        assert page.status_code == 200 and "Record decision" not in page.text
        assert "can view scans but not record decisions" in page.text


@slow
def test_post_without_csrf_token_is_refused(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        assert _login(client, site.keys["reviewer"]).status_code == 303
        page = client.get(f"/ui/scans/{site.benign_scan}")
        assert page.status_code == 200 and "Record decision" in page.text
        form = {"action": "allow", "reason": "benign"}
        for sent in (form, {**form, "csrf": "forged"}):
            refused = client.post(f"/ui/scans/{site.benign_scan}/decisions", data=sent)
            assert refused.status_code == 403, refused.text
        assert client.post("/ui/logout", data={}).status_code == 403
    scan = httpx.get(f"{site.url}/v1/scans/{site.benign_scan}",
                     headers=site.bearer("reviewer")).json()
    assert scan["decisions"] == []


@slow
def test_queue_filters(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        _login(client, site.keys["reviewer"])
        for params, threat, benign in [({"min_score": "0.5"}, True, False),
                                       ({"signal": "weapon"}, True, False),
                                       ({"since": "2999-01-01"}, False, False),
                                       ({"status": "all"}, True, True)]:
            page = client.get("/ui/", params=params)
            assert page.status_code == 200, page.text
            assert (site.threat_scan in page.text, site.benign_scan in page.text) == (
                threat, benign), params
        assert client.get("/ui/", params={"min_score": "lots"}).status_code == 422


@slow
def test_video_streams_with_range_requests_for_a_session_only(site: Site) -> None:
    video = f"/ui/scans/{site.threat_scan}/video"
    with httpx.Client(base_url=site.url) as client:
        assert client.get(video).status_code == 303
        _login(client, site.keys["reviewer"])
        part = client.get(video, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and len(part.content) == 100
        assert part.headers["content-type"] == "video/mp4"


@slow
def test_reviewer_works_the_queue_and_records_a_decision(site: Site) -> None:
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"{site.url}/ui/")
            expect(page).to_have_url(re.compile(r"/ui/login"))
            page.get_by_label("API key").fill(site.keys["reviewer"])
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(f"{site.url}/ui/")

            rows = page.locator("tr.queue-row")
            expect(rows).to_have_count(2)
            risks = [float(r) for r in rows.evaluate_all("rs => rs.map(r => r.dataset.risk)")]
            assert risks == sorted(risks, reverse=True) and risks[0] > 0.5
            expect(rows.first.locator("td.thumb img")).to_be_visible()
            page.wait_for_function(IMAGES_LOADED)
            page.screenshot(path=str(SCREENSHOTS / "queue.png"))

            page.keyboard.press("j")  # keyboard flow: select the first (riskiest) row, open it
            page.keyboard.press("Enter")
            expect(page).to_have_url(f"{site.url}/ui/scans/{site.threat_scan}")
            page.wait_for_function("() => document.getElementById('player').readyState >= 1")

            segments = page.locator("#timeline .seg")
            expect(segments.first).to_be_visible()
            target = segments.nth(segments.count() - 1)
            start = float(target.get_attribute("data-seek") or "nan")
            assert start > 0
            target.click()
            page.wait_for_function(PLAYER_AT, arg=start)

            line = page.locator("ol.transcript button.line").nth(1)
            line_start = float(line.get_attribute("data-seek") or "nan")
            line.click()
            page.wait_for_function(PLAYER_AT, arg=line_start)
            expect(page.locator("ol.transcript mark").first).to_be_visible()
            expect(page.locator("ul.evidence img").first).to_be_visible()
            assert "{" not in page.locator("main").inner_text()  # no raw JSON
            page.wait_for_function(IMAGES_LOADED)
            page.screenshot(path=str(SCREENSHOTS / "scan.png"))

            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("s")  # decision keys: restrict, then remove
            expect(page.locator("input[name=action][value=restrict]")).to_be_checked()
            page.locator("body").click(position={"x": 5, "y": 5})
            page.keyboard.press("r")
            expect(page.locator("input[name=action][value=remove]")).to_be_checked()
            expect(page.get_by_label("Reason")).to_be_focused()
            page.get_by_label("Reason").fill("credible threat with a gun")
            page.get_by_label("Note").fill("drill video naming a target")
            page.get_by_text("Mark segments").click()
            page.locator("input[name=mark_0][value=wrong]").check()
            page.get_by_label("Comment on segment 1").fill("wrong: phone, not a gun")
            page.get_by_role("button", name="Record decision").click()
            expect(page.get_by_role("status")).to_have_text("Decision recorded.")
            expect(page.locator("ul.history")).to_contain_text("credible threat with a gun")
        finally:
            browser.close()

    reviewer = site.key_id("reviewer")
    scan = httpx.get(f"{site.url}/v1/scans/{site.threat_scan}",
                     headers=site.bearer("reviewer")).json()
    (decision,) = scan["decisions"]
    assert decision["action"] == "remove" and decision["reviewer"] == reviewer
    assert decision["reason"] == "credible threat with a gun"
    assert decision["segment_marks"] == [{"segment": 0, "correct": False,
                                          "comment": "wrong: phone, not a gun"}]
    audit = httpx.get(f"{site.url}/v1/audit", params={"actor": reviewer, "limit": 500},
                      headers=site.bearer("admin")).json()["items"]
    actions = {(entry["action"], entry["target"]) for entry in audit}
    assert ("decision.create", f"scan:{site.threat_scan}") in actions
    assert ("scan.view", f"scan:{site.threat_scan}") in actions
    assert ("ui.queue.view", "ui:queue") in actions and ("ui.login", f"key:{reviewer}") in actions

    with httpx.Client(base_url=site.url) as client:  # decided scans leave the queue
        _login(client, site.keys["reviewer"])
        assert site.threat_scan not in client.get("/ui/").text
        assert site.threat_scan in client.get("/ui/", params={"status": "decided"}).text
