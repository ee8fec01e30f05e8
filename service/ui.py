"""The reviewer web UI: server-rendered pages (Jinja2) with a little vanilla JS, served from the
scan service under /ui. A reviewer logs in with their API key; the service answers with a
signed, HttpOnly, SameSite=Strict session cookie naming the key (never holding it) and a
server-side session, both checked against the database on every request, so a revoked key or
a logout ends the session at once; wrong keys at the login form are rate limited like the
API's. Every POST form carries a CSRF token derived from the session. Pages: the review queue
sorted by risk, and a scan page (video with a timeline of flagged segments, evidence
thumbnails, highlighted transcript, score breakdown and the decision form). Decisions go through
`ScanService.decide`, so they land in the audit log like API decisions; page views are audited
too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import func, select

from . import schemas
from .auth import Principal
from .errors import ApiError
from .models import DECISION_ACTIONS, ApiKey, AuditEntry, Decision, Report, Scan, Segment
from .scans import ScanService

HERE = Path(__file__).parent
SESSION_COOKIE = "isk_ui_session"
LOGIN_CSRF_COOKIE = "isk_ui_login_csrf"
SESSION_SECONDS = 12 * 3600
UI_ROLES = ("reviewer", "admin")
QUEUE_LIMIT = 100
# Keyboard shortcuts of the decision actions on the scan page.
ACTION_KEYS = {"remove": "r", "restrict": "s", "allow": "a", "escalate": "e"}
SIGNAL_NAMES = {"weapon": "Weapon", "threat_speech": "Threatening speech",
                "co_occurrence": "Weapon + threat together",
                "known_content": "Re-upload of removed content"}
SECURITY_HEADERS = {
    # Every asset is ours: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=str(HERE / "templates"))


class LoginRequired(Exception):
    """The request has no valid UI session: the browser is sent to the login page."""


# ------------------------------------------------------------------------------- sessions


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session cookies (with a random per-process secret unless configured)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self.secret, message.encode(), hashlib.sha256).digest())

    def dump(self, key_id: str, session_id: str = "") -> str:
        """A cookie value for server-side session `session_id` of key `key_id`."""
        payload = _b64(json.dumps({"k": key_id, "s": session_id, "n": secrets.token_hex(16),
                                   "e": int(time.time()) + SESSION_SECONDS}).encode())
        return f"{payload}.{self._mac(payload)}"

    def load(self, value: str) -> dict[str, Any] | None:
        """The session in cookie `value`, or None when it is forged, malformed or expired."""
        payload, _, mac = value.partition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            session: dict[str, Any] = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(session, dict) or session.get("e", 0) < time.time():
            return None
        return session

    def csrf_token(self, session: dict[str, Any]) -> str:
        """The CSRF token of `session` (every POST form of the session must echo it)."""
        return self._mac(f"csrf:{session['n']}")


def _signer(request: Request) -> SessionSigner:
    signer: SessionSigner = request.app.state.ui_signer
    return signer


def _service(request: Request) -> ScanService:
    service: ScanService = request.app.state.service
    return service


def _principal_of_key_id(service: ScanService, key_id: str) -> Principal | None:
    with service.sessions() as session:
        row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or row.role not in UI_ROLES:
        return None
    return Principal(key_id=row.id, role=row.role, name=row.name)


def _session(request: Request) -> tuple[Principal, dict[str, Any]]:
    """The logged-in reviewer and their session (cookie checked, then the server-side row:
    a session ended by logout is gone though its cookie is still well signed)."""
    value = request.cookies.get(SESSION_COOKIE)
    session = _signer(request).load(value) if value else None
    if session is None or not isinstance(session.get("s"), str) or not session["s"]:
        raise LoginRequired
    key_id = str(session.get("k", ""))
    service = _service(request)
    principal = _principal_of_key_id(service, key_id)
    if principal is None or not service.ui_session_open(session["s"], key_id):
        raise LoginRequired
    return principal, session


def _current(request: Request) -> tuple[Principal, str]:
    """The logged-in reviewer and the session's CSRF token; LoginRequired without one."""
    principal, session = _session(request)
    return principal, _signer(request).csrf_token(session)


def _check_csrf(request: Request, expected: str, sent: str) -> None:
    if not sent or not hmac.compare_digest(expected, sent):
        raise ApiError(403, "csrf_failed", "the form's CSRF token is missing or wrong; reload "
                       "the page and try again")


def _audit(service: ScanService, principal: Principal, action: str, target: str,
           **details: Any) -> None:
    with service.sessions.begin() as session:
        session.add(AuditEntry(actor=principal.key_id, action=action, target=target,
                               details=details))


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200
          ) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


# ------------------------------------------------------------------------- view helpers


def clock(seconds: float | None) -> str:
    """`m:ss.s` for a time in seconds."""
    if seconds is None:
        return "–"
    minutes, rest = divmod(max(0.0, float(seconds)), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def signal_class(signals: list[str]) -> str:
    """The timeline colour class of a segment: weapon, speech or both."""
    weapon, speech = "weapon" in signals, "threat_speech" in signals
    if weapon and speech:
        return "both"
    return "weapon" if weapon else "speech" if speech else "other"


def chip_class(signal: str) -> str:
    """The colour class of one signal's label."""
    return {"weapon": "weapon", "threat_speech": "speech"}.get(signal, "both")


def highlight(text: str, start: float, end: float, hits: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    """`text` (a transcript line from `start` to `end`) split into parts; the parts a threat
    hit matched carry that hit (its rule, category and meaning), the rest carry None."""
    spans: list[tuple[int, int, dict[str, Any]]] = []
    lowered = text.lower()
    for hit in hits:
        if hit["end"] < start - 0.5 or hit["start"] > end + 0.5:
            continue
        needle = str(hit.get("text", "")).strip().lower()
        at = lowered.find(needle) if needle else -1
        if at >= 0 and not any(a < at + len(needle) and at < b for a, b, _ in spans):
            spans.append((at, at + len(needle), hit))
    parts: list[dict[str, Any]] = []
    cursor = 0
    for a, b, hit in sorted(spans, key=lambda s: s[0]):
        if a > cursor:
            parts.append({"text": text[cursor:a], "hit": None})
        parts.append({"text": text[a:b], "hit": hit})
        cursor = b
    if cursor < len(text):
        parts.append({"text": text[cursor:], "hit": None})
    return parts


def _top_reasons(report: dict[str, Any] | None, limit: int = 3) -> list[str]:
    if not report:
        return []
    reasons = list(report.get("reasons") or [])
    for segment in report.get("flagged_segments", []):
        reasons += [r for r in segment.get("reasons", []) if r not in reasons]
    return reasons[:limit]


def _first_frame(report: dict[str, Any] | None) -> int | None:
    evidence = (report or {}).get("evidence") or []
    return int(evidence[0]["frame_index"]) if evidence else None


# ------------------------------------------------------------------------------ queries


def review_queue(service: ScanService, *, status: str = "awaiting", min_score: float | None = None,
                 since: datetime | None = None, signal: str | None = None,
                 limit: int = QUEUE_LIMIT) -> list[dict[str, Any]]:
    """Finished scans for the queue, highest risk first. `status`: "awaiting" (no decision
    yet), "decided" or "all"; `signal`: only scans with a segment flagged for that signal."""
    decided = select(Decision.id).where(Decision.scan_id == Scan.id).exists()
    query = select(Scan, Report.body).join(Report, Report.scan_id == Scan.id, isouter=True) \
        .where(Scan.status == "done")
    if status == "awaiting":
        query = query.where(~decided)
    elif status == "decided":
        query = query.where(decided)
    if min_score is not None:
        query = query.where(Scan.risk_score >= min_score)
    if since is not None:
        query = query.where(Scan.created_at >= since)
    query = query.order_by(Scan.risk_score.desc(), Scan.created_at.asc()).limit(limit * 4)
    with service.sessions() as session:
        rows = session.execute(query).all()
        ids = [scan.id for scan, _ in rows]
        counts = dict(session.execute(select(Decision.scan_id, func.count()).where(
            Decision.scan_id.in_(ids)).group_by(Decision.scan_id)).all()) if ids else {}
        segments: dict[str, list[Segment]] = {}
        if ids:
            for segment in session.scalars(select(Segment).where(Segment.scan_id.in_(ids))):
                segments.setdefault(segment.scan_id, []).append(segment)
    items = []
    for scan, report in rows:
        signals = sorted({s for seg in segments.get(scan.id, []) for s in seg.signals})
        if signal and signal not in signals:
            continue
        items.append({"id": scan.id, "filename": scan.filename or scan.sha256[:12],
                      "risk_score": scan.risk_score or 0.0, "flagged": bool(scan.flagged),
                      "duration": scan.duration, "created_at": scan.created_at,
                      "signals": signals, "segments": len(segments.get(scan.id, [])),
                      "reasons": _top_reasons(report), "frame": _first_frame(report),
                      "decisions": counts.get(scan.id, 0)})
        if len(items) >= limit:
            break
    return items


def scan_page_data(service: ScanService, principal: Principal, scan_id: str
                   ) -> dict[str, Any]:
    """Everything the scan page shows; the view is written to the audit log."""
    with service.sessions.begin() as session:
        row = service._visible(session, principal, scan_id)
        report_row = session.get(Report, scan_id)
        session.add(AuditEntry(actor=principal.key_id, action="scan.view",
                               target=f"scan:{scan_id}", details={"via": "ui"}))
        view = service._view(session, row)
        report = report_row.body if report_row else None
        reviewers = dict(session.execute(select(ApiKey.id, ApiKey.name).where(
            ApiKey.id.in_([d.reviewer for d in view.decisions]))).all()) if view.decisions else {}
    hits = list((report or {}).get("threat_hits") or [])
    transcript = []
    for line in ((report or {}).get("transcript") or {}).get("segments") or []:
        transcript.append({"start": line["start"], "end": line["end"],
                           "parts": highlight(line["text"].strip(), line["start"], line["end"],
                                              hits)})
    flagged = (report or {}).get("flagged_segments") or []
    segments = []
    for index, segment in enumerate(view.segments):
        found = flagged[index] if index < len(flagged) else {}
        segments.append({"index": index, "start": segment.start, "end": segment.end,
                         "score": segment.score, "signals": segment.signals,
                         "reasons": segment.reasons, "css": signal_class(segment.signals),
                         "detections": found.get("detections", []),
                         "hits": found.get("threat_hits", [])})
    duration = row.duration or (report or {}).get("video", {}).get("duration") or 0.0
    if segments:
        duration = max(duration, max(s["end"] for s in segments))
    signals = (report or {}).get("signal_scores") or {}
    return {"scan": view, "report": report, "segments": segments, "transcript": transcript,
            "duration": duration or 1.0, "evidence": (report or {}).get("evidence") or [],
            "signals": [(SIGNAL_NAMES.get(k, k), float(v)) for k, v in signals.items()],
            "threshold": (report or {}).get("threshold"), "reviewers": reviewers}


def evidence_frame(service: ScanService, principal: Principal, scan_id: str,
                   frame_index: int) -> Path:
    """The stored evidence thumbnail of `frame_index` (not audited: the page view is)."""
    with service.sessions() as session:
        service._visible(session, principal, scan_id)
        report = session.get(Report, scan_id)
        body = report.body if report else {}
    root = service.evidence_root()
    for item in body.get("evidence", []):
        if item.get("frame_index") == frame_index:
            path = (root / str(item["path"])).resolve()
            if path.is_relative_to(root) and path.is_file():
                return path
    raise ApiError(404, "not_found", "no evidence image for that frame")


def video_path(service: ScanService, principal: Principal, scan_id: str) -> Path:
    """The stored video of a scan."""
    with service.sessions() as session:
        row = service._visible(session, principal, scan_id)
        sha256 = row.sha256
    try:
        path = service.storage.local_path(sha256)
    except FileNotFoundError:
        raise ApiError(404, "media_missing", "the video is no longer stored") from None
    if not Path(path).is_file():
        raise ApiError(404, "media_missing", "the video is no longer stored")
    return Path(path)


def next_in_queue(service: ScanService, after: str) -> str | None:
    """The highest-risk scan awaiting review other than `after`."""
    for item in review_queue(service, limit=2):
        if item["id"] != after:
            return str(item["id"])
    return None


# ------------------------------------------------------------------------------- routes

router = APIRouter(prefix="/ui", include_in_schema=False)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/ui/") and not value.startswith("//"):
        return value
    return "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", {"csrf": token, "next": _safe_next(next),
                                             "error": None})
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        path="/ui", secure=request.url.scheme == "https")
    return response


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, api_key: Annotated[str, Form(max_length=200)] = "",
          csrf: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/ui/") -> Response:
    _check_csrf(request, request.cookies.get(LOGIN_CSRF_COOKIE, ""), csrf)
    service = _service(request)
    address = request.client.host if request.client else ""
    # Rate limited like API keys: a locked-out address gets 429 (an error page).
    principal = service.authenticate_from(api_key.strip(), address, "ui")
    error = None
    status = 401
    if principal is None:
        error = "That API key is unknown, revoked or mistyped."
    elif principal.role not in UI_ROLES:
        error = f"A {principal.role} key cannot open the reviewer UI; use a reviewer key."
        status = 403
    if error is not None:
        return _page(request, "login.html", {"csrf": csrf, "next": _safe_next(next),
                                             "error": error}, status=status)
    assert principal is not None
    _audit(service, principal, "ui.login", f"key:{principal.key_id}")
    response = RedirectResponse(_safe_next(next), status_code=303)
    session_id = service.open_ui_session(principal, SESSION_SECONDS)
    response.set_cookie(SESSION_COOKIE, _signer(request).dump(principal.key_id, session_id),
                        max_age=SESSION_SECONDS, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    principal, session = _session(request)
    _check_csrf(request, _signer(request).csrf_token(session), csrf)
    _service(request).close_ui_session(session["s"])  # the cookie stops working everywhere
    _audit(_service(request), principal, "ui.logout", f"key:{principal.key_id}",
           session_ended=True)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def queue(request: Request,
          status: Annotated[str, Query(pattern="^(awaiting|decided|all)$")] = "awaiting",
          min_score: Annotated[str, Query(max_length=8)] = "",
          since: Annotated[str, Query(max_length=10)] = "",
          signal: Annotated[str, Query(pattern="^(|weapon|threat_speech)$")] = "") -> Response:
    principal, token = _current(request)
    service = _service(request)
    try:
        score = float(min_score) if min_score else None
        day = date.fromisoformat(since) if since else None
    except ValueError:
        raise ApiError(422, "invalid_request", "min score is a number 0..1 and the date "
                       "YYYY-MM-DD") from None
    if score is not None and not 0 <= score <= 1:
        raise ApiError(422, "invalid_request", "min score is between 0 and 1")
    items = review_queue(service, status=status, min_score=score, signal=signal or None,
                         since=datetime.combine(day, dtime(), UTC) if day else None)
    _audit(service, principal, "ui.queue.view", "ui:queue", status=status, count=len(items))
    return _page(request, "queue.html", {
        "principal": principal, "csrf": token, "items": items,
        "filters": {"status": status, "min_score": min_score, "since": since, "signal": signal},
    })


@router.get("/scans/{scan_id}", response_class=HTMLResponse)
async def scan_page(request: Request, scan_id: str) -> Response:
    principal, token = await run_in_threadpool(_current, request)
    service = _service(request)
    data = await run_in_threadpool(scan_page_data, service, principal, scan_id)
    following = await run_in_threadpool(next_in_queue, service, scan_id)
    return _page(request, "scan.html", {
        "principal": principal, "csrf": token, "next_id": following,
        "can_decide": principal.can("scans:decide"), "actions": DECISION_ACTIONS,
        "recorded": request.query_params.get("recorded") == "1", **data,
    })


@router.get("/scans/{scan_id}/video")
def scan_video(request: Request, scan_id: str) -> Response:
    principal, _ = _current(request)
    path = video_path(_service(request), principal, scan_id)
    # FileResponse answers Range requests (206), so the player can seek without downloading.
    return FileResponse(path, media_type="video/mp4",
                        headers={"Cache-Control": "private, max-age=600"})


@router.get("/scans/{scan_id}/frames/{frame_index}")
def scan_frame(request: Request, scan_id: str, frame_index: int) -> Response:
    principal, _ = _current(request)
    path = evidence_frame(_service(request), principal, scan_id, frame_index)
    return FileResponse(path, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=600"})


@router.post("/scans/{scan_id}/decisions")
async def decide(request: Request, scan_id: str) -> Response:
    principal, token = await run_in_threadpool(_current, request)
    form = await request.form(max_files=0, max_fields=2000)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    _check_csrf(request, token, fields.get("csrf", ""))
    if not principal.can("scans:decide"):
        raise ApiError(403, "forbidden", f"a {principal.role} key may not record decisions")
    marks = []
    for name, value in fields.items():
        if name.startswith("mark_") and value in ("correct", "wrong"):
            index = name.removeprefix("mark_")
            if index.isdigit():
                marks.append({"segment": int(index), "correct": value == "correct",
                              "comment": fields.get(f"comment_{index}", "").strip()})
    try:
        decision = schemas.DecisionIn(action=fields.get("action", ""),  # type: ignore[arg-type]
                                      reason=fields.get("reason", "").strip(),
                                      note=fields.get("note", "").strip(),
                                      segment_marks=marks)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}"
                             for e in exc.errors())
        raise ApiError(422, "invalid_decision", f"the decision is incomplete: {problems}"
                       ) from None
    await run_in_threadpool(_service(request).decide, principal, scan_id, decision)
    return RedirectResponse(f"/ui/scans/{quote(scan_id)}?recorded=1#decisions",
                            status_code=303)


def install(app: FastAPI, secret: bytes | None = None) -> None:
    """Mount the reviewer UI (/ui) and its static files on `app`; `secret` signs sessions."""
    app.state.ui_signer = SessionSigner(secret)
    templates.env.filters["clock"] = clock
    templates.env.globals["signal_names"] = SIGNAL_NAMES
    templates.env.globals["chip_class"] = chip_class
    templates.env.globals["action_keys"] = ACTION_KEYS
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return _login_redirect(request)

    previous = app.exception_handlers.get(ApiError)

    async def _api_error(request: Request, exc: Exception) -> Response:
        # Browsers on /ui get an HTML error page; API clients keep their JSON errors.
        if request.url.path.startswith("/ui/") and isinstance(exc, ApiError):
            response = _page(request, "error.html", {"status": exc.status,
                                                     "message": exc.message},
                             status=exc.status)
            return response
        assert previous is not None
        result: Response = await previous(request, exc)  # type: ignore[misc]
        return result

    app.add_exception_handler(ApiError, _api_error)
