"""The report parser of the service, fuzzed against the real database (SQLite and PostgreSQL):
`ScanService.finish` given any report-shaped JSON (a complete report mutated, or arbitrary JSON,
as a damaged or version-skewed worker result would be) stores it and the scan is done, or the
scan fails with `invalid_report` and a reason; it never raises, and the stored scan and report
read back through the API. The count of reports tried is printed (`pytest -s`)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import strategies as st

from service.models import Scan
from tests.pipelines.test_fuzz_parsers import a_report, json_values, mutated, run_fuzz

from .conftest import Api

REPORTS = st.one_of(mutated(a_report()), json_values)


def finish_any_report(api: Api, outcomes: dict[str, int]) -> Any:
    key_id = api.key_id("uploader")

    def check(report: Any) -> None:
        scan_id = str(uuid.uuid4())
        with api.service.sessions.begin() as session:
            session.add(Scan(id=scan_id, sha256="0" * 64, options_hash="fuzz", status="running",
                             uploader_key_id=key_id))
        api.service.finish(scan_id, {"report": report})
        view = api.client.get(f"/v1/scans/{scan_id}", headers=api.auth("uploader"))
        assert view.status_code == 200, view.text
        scan = view.json()
        outcomes[scan["status"]] = outcomes.get(scan["status"], 0) + 1
        stored = api.client.get(f"/v1/scans/{scan_id}/report", headers=api.auth("uploader"))
        if scan["status"] == "done":
            assert stored.status_code == 200, stored.text
            assert stored.json()["video"]["path"] == "0" * 64  # the server's name, not theirs
        else:
            assert scan["status"] == "failed", scan
            assert scan["error"]["code"] == "invalid_report" and scan["error"]["message"]
            assert stored.status_code == 409

    return check


@pytest.mark.parametrize("examples", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_finish_stores_or_refuses_any_report(api: Api, examples: int) -> None:
    outcomes: dict[str, int] = {}
    run_fuzz(examples, REPORTS, finish_any_report(api, outcomes), "ScanService.finish")
    print(f"ScanService.finish outcomes: {outcomes}")
    assert outcomes.get("done") and outcomes.get("failed")  # both paths were exercised
