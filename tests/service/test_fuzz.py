"""Property test of the whole API against its own OpenAPI spec (hypothesis drawing inputs from
the spec's JSON schemas by `from_schema` below, mixed with arbitrary text and JSON): for
every operation, whatever the parameters and body, and whichever role (or none) calls, the
answer is never a 5xx, every error is JSON with a stable code, and every answer carries
`Cache-Control: no-store` and `nosniff`. Run in-process (TestClient) and over HTTP against the
real server (`service.server.server_config`, uvicorn on 127.0.0.1 only), plus multipart uploads
with hostile form fields (metadata nested tens of thousands deep, odd callback URLs and
idempotency keys), which must leave nothing staged. Dates carry offsets up to ±14 h and reach
the ends of the calendar. Bounded examples per operation and a wall-clock budget, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import create_app
from service.openapi import spec
from service.server import server_config

from .conftest import Api, fake_report, unique_copy

SPEC = spec()
EXAMPLES_PER_OPERATION = 25
HTTP_EXAMPLES_PER_OPERATION = 10
BUDGET_S = 240.0  # wall clock of one fuzz run over HTTP; examples left then are skipped
OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=14)),
                           timezone(timedelta(hours=5, minutes=30))])
EDGE_DATES = [datetime.min, datetime.max, datetime(1, 1, 1, 3), datetime(9999, 12, 31, 20)]
OPERATIONS = [(path, method.upper(), operation) for path, item in sorted(SPEC["paths"].items())
              for method, operation in sorted(item.items())]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for the subset of JSON Schema the spec uses (objects, strings with length,
    enums and patterns, bounded numbers, arrays, anyOf, $ref)."""
    schema = _resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        if not properties:
            return st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(),
                                   max_size=3)
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        if schema.get("format") == "date-time":  # the ends of the calendar, with offsets
            return st.one_of(st.datetimes(timezones=OFFSETS),
                             st.sampled_from(EDGE_DATES).flatmap(
                                 lambda d: st.builds(d.replace, tzinfo=OFFSETS))
                             ).map(lambda t: t.isoformat())
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 40), 40))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.text(max_size=10) | st.integers() | st.none()


def _value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid value for `schema`, or arbitrary text, or nothing."""
    return st.one_of(from_schema(schema), st.text(max_size=30))


def _as_param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def requests_for(operation: dict[str, Any], scan_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests (path values, query, JSON body, role) for one operation."""
    params = operation.get("parameters", [])
    path = {p["name"]: st.one_of(st.just(scan_id), _value(p["schema"]))
            for p in params if p["in"] == "path"}
    query = {p["name"]: st.one_of(st.none(), _value(p["schema"]))
             for p in params if p["in"] == "query"}
    content = operation.get("requestBody", {}).get("content", {})
    body: st.SearchStrategy[Any] = st.none()
    if "application/json" in content:
        body = st.one_of(from_schema(content["application/json"]["schema"]),
                         st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    return st.fixed_dictionaries({
        "path": st.fixed_dictionaries(path), "query": st.fixed_dictionaries(query),
        "body": body, "role": st.sampled_from(["uploader", "reviewer", "admin", None]),
        "idempotency": st.one_of(st.none(), st.text(st.characters(min_codepoint=32,
                                                                  max_codepoint=126),
                                                    min_size=1, max_size=20)),
    })


Send = Callable[..., Any]  # (method, path, params=, headers=, json=) -> response


def fuzz_every_operation(send: Send, auth: Callable[[str], dict[str, str]], scan_id: str,
                         examples: int, budget_s: float = math.inf) -> int:
    """Send `examples` generated requests to every operation of the spec through `send`;
    returns how many were sent (fewer once `budget_s` has passed)."""
    tried = 0
    deadline = time.monotonic() + budget_s

    def checker(template: str, method: str, operation: dict[str, Any]) -> Any:
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(request=requests_for(operation, scan_id))
        def check(request: dict[str, Any]) -> None:
            nonlocal tried
            if time.monotonic() > deadline:
                return
            tried += 1
            path = template
            for name, value in request["path"].items():
                path = path.replace("{" + name + "}", _quote(_as_param(value)))
            headers = auth(request["role"]) if request["role"] else {}
            if request["idempotency"] is not None and request["idempotency"].strip():
                headers["Idempotency-Key"] = request["idempotency"].strip()  # HTTP trims it
            query = {k: _as_param(v) for k, v in request["query"].items() if v is not None}
            response = send(method, path, params=query, headers=headers, json=request["body"])
            _check_response(response, (method, path, query, request))

        return check

    for template, method, operation in OPERATIONS:
        checker(template, method, operation)()
    return tried


def _check_response(response: Any, request: Any) -> None:
    assert response.status_code < 500, (request, response.status_code, response.text)
    assert response.headers.get("cache-control") == "no-store", (request, response.headers)
    assert response.headers.get("x-content-type-options") == "nosniff", request
    if response.status_code >= 400:
        assert response.json()["error"]["code"], response.text


def _nested(depth: int) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}"


UPLOAD_FIELDS = st.fixed_dictionaries({}, optional={
    "metadata": st.one_of(
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=20).map(json.dumps),
        st.integers(0, 40_000).map(_nested), st.text(max_size=50)),
    "external_id": st.text(max_size=250),
    "priority": st.sampled_from(["high", "normal", "low", "urgent", ""]),
    "callback_url": st.sampled_from([
        "http://[64:ff9b::7f00:1]/h", "http://[2002:7f00:1::]/h", "http://[::127.0.0.1]/h",
        "http://127.0.0.1:1/h", "ftp://example.com/", "http://user:pw@example.com/", "",
        "http://[::ffff:169.254.169.254]/"]),
})


def fuzz_uploads(send: Send, auth: Callable[[str], dict[str, str]], video: bytes,
                 staging: Path, examples: int) -> int:
    """Multipart uploads with hostile form fields and either the video or junk bytes: never a
    5xx, and nothing stays in the staging folder."""
    tried = 0

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fields=UPLOAD_FIELDS, junk=st.booleans(),
           idempotency=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                           min_size=1, max_size=8))
    def check(fields: dict[str, str], junk: bool, idempotency: str | None) -> None:
        nonlocal tried
        tried += 1
        headers = auth("uploader")
        if idempotency is not None:
            headers["Idempotency-Key"] = idempotency
        content = b"\x00junk" * 50 if junk else video
        response = send("POST", "/v1/scans", headers=headers, data=fields,
                        files={"file": ("v.mp4", content, "video/mp4")})
        _check_response(response, fields)
        assert not list(staging.glob(".upload-*")), fields

    check()
    return tried


@pytest.mark.slow
def test_no_input_makes_the_api_fail(api: Api, benign_street_video: Path, tmp_path: Path
                                     ) -> None:
    upload = api.upload(unique_copy(benign_street_video, tmp_path))
    scan_id = upload.json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.7)})
    tried = fuzz_every_operation(api.client.request, api.auth, scan_id, EXAMPLES_PER_OPERATION)
    assert tried >= len(OPERATIONS) * 10
    uploads = fuzz_uploads(api.client.request, api.auth,
                           unique_copy(benign_street_video, tmp_path).read_bytes(),
                           api.service.storage_root / ".incoming", 40)
    print(f"\n{tried} generated requests and {uploads} uploads, no 5xx")


@pytest.mark.slow
def test_no_input_makes_the_served_api_fail_over_http(api: Api, benign_street_video: Path,
                                                      tmp_path: Path) -> None:
    """The same against the real server over HTTP on 127.0.0.1 (a second server process on the
    session's database and storage): what uvicorn and its connection limits add is in play."""
    import uvicorn

    upload = api.upload(unique_copy(benign_street_video, tmp_path))
    scan_id = upload.json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.7)})
    served = api.service.settings
    app = create_app(served)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(app, served, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          trust_env=False) as client:
            tried = fuzz_every_operation(client.request, api.auth, scan_id,
                                         HTTP_EXAMPLES_PER_OPERATION, BUDGET_S)
            uploads = fuzz_uploads(client.request, api.auth,
                                   unique_copy(benign_street_video, tmp_path).read_bytes(),
                                   api.service.storage_root / ".incoming", 20)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert tried >= len(OPERATIONS) * 3
    print(f"\n{tried} requests and {uploads} uploads over HTTP, no 5xx")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="") or "%20"
