"""Sessions and credentials: logging out of the reviewer UI ends the session on the server (the
old cookie used to keep working), and wrong API keys, at the API or the login form, are rate
limited per client address with a lock-out; failures, lock-outs and logouts are audited."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.throttle import AuthThrottle
from service.ui import SESSION_COOKIE

from .conftest import Api


def _login(client: TestClient, key: str) -> Any:
    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, form.text
    return client.post("/ui/login", data={"api_key": key, "csrf": token.group(1),
                                          "next": "/ui/"}, follow_redirects=False)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _audit(api: Api, **query: str) -> list[dict[str, Any]]:
    # Read directly: the test client's own address may be locked out.
    page = api.service.audit(limit=500, **query)  # type: ignore[arg-type]
    return [item.model_dump() for item in page.items]


def test_logout_ends_the_session_on_the_server(api: Api) -> None:
    client = api.client
    assert _login(client, api.keys["reviewer"]).status_code == 303
    cookie = client.cookies[SESSION_COOKIE]
    queue = client.get("/ui/", follow_redirects=False)
    assert queue.status_code == 200
    out = client.post("/ui/logout", data={"csrf": _csrf(queue.text)}, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.set(SESSION_COOKIE, cookie)  # the old cookie, replayed
    again = client.get("/ui/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/ui/login")
    logouts = _audit(api, actor=api.key_id("reviewer"), action="ui.logout")
    assert logouts and logouts[0]["details"] == {"session_ended": True}
    client.cookies.clear()


def test_a_cookie_without_a_server_side_session_is_refused(api: Api) -> None:
    signer = api.client.app.state.ui_signer  # type: ignore[attr-defined]
    forged = signer.dump(api.key_id("reviewer"), "no-such-session")
    api.client.cookies.set(SESSION_COOKIE, forged)
    try:
        assert api.client.get("/ui/", follow_redirects=False).status_code == 303
    finally:
        api.client.cookies.clear()


def test_wrong_keys_lock_the_address_out_and_are_audited(make_api: Any) -> None:
    with make_api(auth_max_failures=5, auth_lockout_s=60) as api:
        before = len(_audit(api, action="auth.failure", target="client:testclient"))
        wrong = {"Authorization": "Bearer isk_0123456789ab_wrongsecret"}
        codes = [api.client.get("/v1/scans", headers=wrong).status_code for _ in range(5)]
        assert codes == [401] * 5
        locked = api.client.get("/v1/scans", headers=wrong)
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"]["code"] == "too_many_attempts"
        assert 0 < int(locked.headers["retry-after"]) <= 60
        # The right key from the locked address is not even checked: no oracle.
        assert api.client.get("/v1/scans", headers=api.auth("reviewer")).status_code == 429
        assert _login(api.client, api.keys["reviewer"]).status_code == 429
        failures = _audit(api, action="auth.failure", target="client:testclient")
        assert len(failures) - before == 5
        assert failures[0]["details"] == {"via": "api", "prefix": "0123456789ab"}
        lockouts = _audit(api, action="auth.lockout", target="client:testclient")
        assert lockouts and lockouts[0]["details"]["failures"] == 5


def test_wrong_keys_at_the_login_form_count_too(make_api: Any) -> None:
    with make_api(auth_max_failures=3, auth_lockout_s=60) as api:
        assert [_login(api.client, "isk_nope_nope").status_code for _ in range(3)] == [401] * 3
        locked = _login(api.client, api.keys["reviewer"])
        assert locked.status_code == 429 and "try again" in locked.text
        assert _audit(api, action="auth.failure", target="client:testclient")[0][
            "details"]["via"] == "ui"


@pytest.mark.parametrize(("times", "locked"), [
    ([0, 1, 2], True),  # three inside the window
    ([0, 1, 11], False),  # the first left the window
    ([0, 5, 9.9], True),
])
def test_throttle_counts_failures_inside_the_window(times: list[float], locked: bool) -> None:
    now = [0.0]
    throttle = AuthThrottle(3, 10.0, 60.0, clock=lambda: now[0])
    results = []
    for t in times:
        now[0] = t
        results.append(throttle.failed("a"))
    assert results[-1] is locked and not any(results[:-1])
    assert (throttle.retry_after("a") > 0) is locked and throttle.retry_after("b") == 0
    now[0] += 61
    assert throttle.retry_after("a") == 0
