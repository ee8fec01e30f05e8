"""Property test of the whole API against its own OpenAPI spec (hypothesis drawing inputs from
the spec's JSON schemas by `from_schema` below, mixed with arbitrary text and JSON): for
every operation, whatever the parameters and body, and whichever role (or none) calls, the
answer is never a 5xx, and every error is JSON with a stable code. Bounded examples per
operation, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.openapi import spec

from .conftest import Api, fake_report, unique_copy

SPEC = spec()
EXAMPLES_PER_OPERATION = 25
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
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat())
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


@pytest.mark.slow
def test_no_input_makes_the_api_fail(api: Api, benign_street_video: Path, tmp_path: Path
                                     ) -> None:
    upload = api.upload(unique_copy(benign_street_video, tmp_path))
    scan_id = upload.json()["id"]
    api.service.finish(scan_id, {"report": fake_report(0.7)})
    tried = 0

    def checker(template: str, method: str, operation: dict[str, Any]) -> Any:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(request=requests_for(operation, scan_id))
        def check(request: dict[str, Any]) -> None:
            nonlocal tried
            tried += 1
            path = template
            for name, value in request["path"].items():
                path = path.replace("{" + name + "}", _quote(_as_param(value)))
            headers = api.auth(request["role"]) if request["role"] else {}
            if request["idempotency"] is not None:
                headers["Idempotency-Key"] = request["idempotency"]
            query = {k: _as_param(v) for k, v in request["query"].items() if v is not None}
            response = api.client.request(method, path, params=query, headers=headers,
                                          json=request["body"])
            assert response.status_code < 500, (method, path, query, request, response.text)
            if response.status_code >= 400:
                assert response.json()["error"]["code"], response.text

        return check

    for template, method, operation in OPERATIONS:
        checker(template, method, operation)()
    assert tried >= len(OPERATIONS) * 10
    print(f"\n{tried} generated requests, no 5xx")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="") or "%20"
