"""The HTTP API (FastAPI). Routes are thin: they authenticate the caller, check the permission
the route names, parse the input and call `ScanService`. Every error is JSON with a stable code
(see `service.errors`); the OpenAPI spec is served at /openapi.json and checked into
docs/openapi.json. `create_app` builds the app; `incitescan serve` runs it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.background import BackgroundTask

from pipelines.report import scanner_version

from . import schemas
from .auth import Principal
from .errors import ApiError, install_handlers, validation_error
from .jsonlimits import JsonRefused, loads_bounded
from .scans import ScanService
from .schemas import MAX_METADATA_BYTES
from .settings import ServiceSettings
from .uploads import MAX_FIELD_BYTES, receive_multipart

bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer isk_...`")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    # 429: every route takes a key, and an address sending wrong keys is locked out.
    return {status: {"model": schemas.ErrorResponse} for status in (*statuses, 429)}


COMMON_ERRORS = _errors(401, 403, 422)
ScanId = Annotated[str, Path(max_length=64, description="the scan's id")]

UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the video"},
        "external_id": {"type": "string", "maxLength": 200},
        "priority": {"type": "string", "enum": ["high", "normal", "low"], "default": "normal"},
        "callback_url": {"type": "string", "maxLength": 2000},
        "metadata": {"type": "string", "description": "a JSON object, at most 16 KiB"},
    },
}


def service_of(request: Request) -> ScanService:
    """The app's ScanService (created at start-up)."""
    service: ScanService = request.app.state.service
    return service


def require(*permissions: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold a valid key whose role grants one of
    `permissions` (401 without a valid key, 403 with the wrong role)."""

    def dependency(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "unauthorized", "send an API key as `Authorization: Bearer KEY`",
                           headers=challenge)
        address = request.client.host if request.client else ""
        principal = service_of(request).authenticate_from(credentials.credentials, address,
                                                          "api")
        if principal is None:
            raise ApiError(401, "invalid_key", "the API key is unknown, revoked or malformed",
                           headers=challenge)
        if not any(principal.can(p) for p in permissions):
            raise ApiError(403, "forbidden", f"a {principal.role} key may not do this")
        return principal

    return dependency


Uploader = Annotated[Principal, Depends(require("scans:submit"))]
Reader = Annotated[Principal, Depends(require("scans:read_own", "scans:read_all"))]
Reviewer = Annotated[Principal, Depends(require("scans:decide"))]
Auditor = Annotated[Principal, Depends(require("audit:read"))]
Admin = Annotated[Principal, Depends(require("keys:manage"))]


async def _read_small_body(request: Request, limit: int = MAX_FIELD_BYTES) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"a JSON body is at most {limit} bytes")
    return bytes(body)


def check_same_content(first_sha256: str, sha256: str) -> None:
    """A 409 ApiError when a reused Idempotency-Key comes with other content than the first
    time (the first scan used to be returned, as if this video had been scanned)."""
    if first_sha256 != sha256:
        raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used for "
                       "another video; use a new key for a new video")


def _form_fields(fields: dict[str, str]) -> schemas.ScanOptionsIn:
    data: dict[str, Any] = dict(fields)
    if "metadata" in data:
        try:  # bounded before parsing: a deeply nested value used to raise RecursionError
            data["metadata"] = loads_bounded(data["metadata"], max_bytes=MAX_METADATA_BYTES)
        except JsonRefused as exc:
            raise ApiError(422, "invalid_request", f"metadata must be a JSON object: it {exc}"
                           ) from None
    try:
        return schemas.ScanOptionsIn.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(), "form field") from None


def create_app(settings: ServiceSettings | None = None, *,
               service: ScanService | None = None) -> FastAPI:
    """The API app; the ScanService is created (and the database migrated) at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scans = service or ScanService(settings or ServiceSettings())
        await run_in_threadpool(scans.start)
        app.state.service = scans
        try:
            yield
        finally:
            await run_in_threadpool(scans.close)

    app = FastAPI(title="IncitementScan API", version=scanner_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Submit videos for incitement scanning, read verdicts and "
                              "reports, record review decisions. See docs/api.md.")
    install_handlers(app)

    @app.post("/v1/scans", status_code=202, response_model=schemas.Scan, tags=["scans"],
              summary="Submit a video (upload or storage reference)",
              responses={200: {"model": schemas.Scan,
                               "description": "the same video or Idempotency-Key was submitted "
                                              "before: that scan"},
                         **_errors(401, 403, 409, 413, 415, 422)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": UPLOAD_FORM},
                  "application/json": {"schema": schemas.ScanReference.model_json_schema()},
              }}})
    async def submit_scan(request: Request, principal: Uploader, idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)] = None
                          ) -> JSONResponse:
        scans = service_of(request)
        existing = None
        if idempotency_key is not None:
            existing = await run_in_threadpool(scans.by_idempotency_key, principal,
                                               idempotency_key)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            staged = await receive_multipart(request, scans.storage_root / ".incoming",
                                             scans.settings.max_upload_bytes)
            try:  # every way out, errors of any kind included, removes the staged file
                if existing is not None:  # a retry must send the same video
                    check_same_content(existing.sha256, staged.sha256)
                    row, created = existing, False
                else:
                    fields = _form_fields(staged.fields)
                    row, created = await run_in_threadpool(scans.submit_upload, principal,
                                                           staged, fields, idempotency_key)
            finally:
                staged.discard()
        elif kind == "application/json":
            try:
                reference = schemas.ScanReference.model_validate_json(
                    await _read_small_body(request))
            except ValidationError as exc:
                raise validation_error(exc.errors(), "body") from None
            if existing is not None:
                check_same_content(existing.sha256, reference.storage_key)
                row, created = existing, False
            else:
                row, created = await run_in_threadpool(scans.submit_reference, principal,
                                                       reference, idempotency_key)
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a "
                           "`file` part, or JSON with a `storage_key`")
        view = await run_in_threadpool(scans.get_scan, principal, row.id)
        return JSONResponse(view.model_dump(mode="json"), 202 if created else 200,
                            headers={"Location": f"/v1/scans/{row.id}"})

    @app.get("/v1/scans", response_model=schemas.ScanPage, tags=["scans"],
             summary="List scans, newest first", responses=COMMON_ERRORS)
    def list_scans(
        request: Request, principal: Reader,
        status: schemas.Status | None = None,
        min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
        max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        external_id: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> schemas.ScanPage:
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None and value.tzinfo is None:
                raise ApiError(422, "invalid_request", f"{name} needs a time zone (e.g. Z)")
        return service_of(request).list_scans(
            principal, status=status, min_score=min_score, max_score=max_score,
            created_after=created_after, created_before=created_before,
            external_id=external_id, limit=limit, cursor=cursor)

    @app.get("/v1/scans/{scan_id}", response_model=schemas.Scan, tags=["scans"],
             summary="A scan: status, progress, verdict, flagged segments, decisions",
             responses=_errors(401, 403, 404, 422))
    def get_scan(request: Request, principal: Reader, scan_id: ScanId) -> schemas.Scan:
        return service_of(request).get_scan(principal, scan_id)

    @app.get("/v1/scans/{scan_id}/report", tags=["scans"],
             summary="The full versioned JSON report (docs/report-schema.json)",
             responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}},
                        **_errors(401, 403, 404, 409, 422)})
    def get_report(request: Request, principal: Reader, scan_id: ScanId) -> JSONResponse:
        return JSONResponse(service_of(request).report(principal, scan_id))

    @app.get("/v1/scans/{scan_id}/frames/{frame_index}", tags=["evidence"],
             summary="An evidence thumbnail (JPEG, detection boxes drawn)",
             response_class=FileResponse,
             responses={200: {"content": {"image/jpeg": {}}}, **_errors(401, 403, 404, 409, 422)})
    def get_frame(request: Request, principal: Reader, scan_id: ScanId,
                  frame_index: Annotated[int, Path(ge=0, le=10_000_000)]) -> FileResponse:
        path = service_of(request).frame(principal, scan_id, frame_index)
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/v1/scans/{scan_id}/clip", tags=["evidence"],
             summary="A short MP4 clip of the video (e.g. a flagged segment)",
             response_class=FileResponse,
             responses={200: {"content": {"video/mp4": {}}}, **_errors(401, 403, 404, 422)})
    def get_clip(request: Request, principal: Reader, scan_id: ScanId,
                 start: Annotated[float, Query(ge=0, le=1e6)],
                 end: Annotated[float, Query(gt=0, le=1e6)]) -> FileResponse:
        path = service_of(request).clip(principal, scan_id, start, end)
        return FileResponse(path, media_type="video/mp4", filename=f"{scan_id}.mp4",
                            background=BackgroundTask(path.unlink, missing_ok=True))

    @app.post("/v1/scans/{scan_id}/decisions", status_code=201, response_model=schemas.Decision,
              tags=["review"], summary="Record a reviewer's decision",
              responses=_errors(401, 403, 404, 409, 422))
    def decide(request: Request, principal: Reviewer, scan_id: ScanId,
               decision: schemas.DecisionIn) -> schemas.Decision:
        return service_of(request).decide(principal, scan_id, decision)

    @app.get("/v1/audit", response_model=schemas.AuditPage, tags=["review"],
             summary="The append-only audit log, newest first", responses=COMMON_ERRORS)
    def audit(request: Request, principal: Auditor,
              actor: Annotated[str | None, Query(max_length=64)] = None,
              action: Annotated[str | None, Query(max_length=64)] = None,
              target: Annotated[str | None, Query(max_length=200)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 100,
              cursor: Annotated[str | None, Query(max_length=500)] = None) -> schemas.AuditPage:
        return service_of(request).audit(actor=actor, action=action, target=target,
                                         limit=limit, cursor=cursor)

    @app.post("/v1/keys", status_code=201, response_model=schemas.KeyCreated, tags=["keys"],
              summary="Create an API key (shown once)", responses=COMMON_ERRORS)
    def create_key(request: Request, principal: Admin, body: schemas.KeyIn
                   ) -> schemas.KeyCreated:
        return service_of(request).create_key(principal, body)

    @app.get("/v1/keys", response_model=list[schemas.KeyInfo], tags=["keys"],
             summary="List API keys (never their secrets)", responses=COMMON_ERRORS)
    def list_keys(request: Request, principal: Admin) -> list[schemas.KeyInfo]:
        return service_of(request).list_keys()

    @app.delete("/v1/keys/{key_id}", response_model=schemas.KeyInfo, tags=["keys"],
                summary="Revoke an API key", responses=_errors(401, 403, 404, 422))
    def revoke_key(request: Request, principal: Admin,
                   key_id: Annotated[str, Path(max_length=64)]) -> schemas.KeyInfo:
        return service_of(request).revoke_key(principal, key_id)

    from .ui import install as install_ui  # the reviewer web UI under /ui, outside the spec

    secret = (settings or ServiceSettings()).session_secret
    install_ui(app, secret=secret.get_secret_value().encode() if secret else None)
    return app

