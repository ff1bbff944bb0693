"""labd's transport: version prefixes stripped, Docker's error shapes and status codes."""
import pytest

from labcore import daemon
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound


def test_status_codes_follow_docker():
    assert [daemon.status_for(e("x")) for e in (NotFound, InvalidTransition, BadInput, LabError)] == \
        [404, 409, 400, 500]


def test_routes_match_with_or_without_api_version(monkeypatch):
    monkeypatch.setattr(daemon, "ROUTES", [])
    daemon.route("GET", "/containers/{id}/json")(lambda request, id: {"Id": id})
    for path in ("/containers/abc/json", "/v1.45/containers/abc/json"):
        assert daemon.dispatch(daemon.Request("GET", path, {}, b"")) == {"Id": "abc"}
    with pytest.raises(daemon.ApiError) as missing:
        daemon.dispatch(daemon.Request("POST", "/containers/abc/json", {}, b""))
    assert missing.value.status == 404


def test_malformed_json_is_a_400():
    with pytest.raises(daemon.ApiError) as bad:
        daemon.Request("POST", "/containers/create", {}, b"{not json").json()
    assert bad.value.status == 400


def test_tcp_only_on_loopback():
    with pytest.raises(BadInput, match="loopback only"):
        daemon.bind_tcp("0.0.0.0:2375")
