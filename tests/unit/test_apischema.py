"""The validation seam: every body field and query value checked, refused with Docker's words, never a crash."""
import pytest

from labcore.api import schema
from labcore.api.labd import ApiError, Request


def refused(schema, body) -> str:
    with pytest.raises(ApiError) as caught:
        schema.check(body)
    assert caught.value.status == 400
    return str(caught.value)


@pytest.mark.parametrize("body, message", [
    ([], "json: cannot unmarshal array into Go value of type ContainerConfigWrapper"),
    ("x", "json: cannot unmarshal string into Go value of type ContainerConfigWrapper"),
    ({"Image": 123}, "json: cannot unmarshal number into Go struct field ContainerConfigWrapper.Image of type string"),
    ({"Cmd": 123}, "cannot unmarshal number into Go struct field ContainerConfigWrapper.Cmd of type string"),
    ({"Cmd": [1, 2]}, "cannot unmarshal number into Go struct field ContainerConfigWrapper.Cmd"),
    ({"Env": [1]}, "cannot unmarshal number into Go struct field ContainerConfigWrapper.Env of type string"),
    ({"HostConfig": {"NanoCpus": "x"}}, "cannot unmarshal string into Go struct field HostConfig.NanoCpus of type int64"),
    ({"HostConfig": {"Memory": 1.5}}, "cannot unmarshal number 1.5 into Go struct field HostConfig.Memory"),
    ({"HostConfig": {"Memory": 2**70}}, "HostConfig.Memory of type int64"),
    ({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 80}]}}}, "PortBinding.HostPort of type string"),
    ({"HostConfig": []}, "cannot unmarshal array into Go struct field ContainerConfigWrapper.HostConfig"),
])
def test_wrong_types_are_refused_with_gos_words(body, message):
    assert message in refused(schema.CONFIG, body)


def test_field_names_match_without_regard_to_case_as_go_matches_them():
    checked = schema.EXEC_CONFIG.check({"cmd": ["true"], "detachKeys": "ctrl-x"})
    assert checked["Cmd"] == ["true"] and checked["DetachKeys"] == "ctrl-x"


def test_unknown_fields_pass_as_docker_lets_them():
    assert schema.CONFIG.check({"Image": "busybox", "FromANewerApi": 1})["FromANewerApi"] == 1


@pytest.mark.parametrize("field, value", [("CpusetCpus", "0,1"), ("Dns", ["1.1.1.1"]), ("ShmSize", 1 << 30),
                                          ("Sysctls", {"net.ipv4.ip_forward": "1"}), ("IpcMode", "host")])
def test_host_config_fields_labd_does_not_implement_are_named_in_a_400(field, value):
    with pytest.raises(ApiError, match=f"HostConfig.{field} is not supported by labd") as caught:
        schema.refuse_unimplemented({field: value})
    assert caught.value.status == 400


def test_the_defaults_the_docker_cli_sends_are_not_requests():
    schema.refuse_unimplemented({"Privileged": False, "CapAdd": None, "ShmSize": 0, "IpcMode": "private",
                                    "Dns": [], "OomKillDisable": False, "CpusetCpus": ""})


def test_the_security_fields_are_implemented_not_refused():
    security = {"Privileged", "CapAdd", "CapDrop", "SecurityOpt", "ReadonlyRootfs", "Devices"}
    assert security <= set(schema.HOST_CONFIG.fields) and not security & set(schema.UNIMPLEMENTED)


@pytest.mark.parametrize("value, expected", [(None, False), ("", False), ("0", False), ("no", False),
                                             ("FALSE", False), ("none", False), ("1", True), ("yes", True),
                                             ("anything", True)])
def test_query_booleans_as_docker_reads_them(value, expected):
    assert schema.query_bool({} if value is None else {"all": value}, "all") is expected


def test_query_integers_and_choices():
    assert schema.query_int({"t": "5"}, "t") == 5 and schema.query_int({}, "t", 10) == 10
    for query in ({"t": "abc"}, {"t": "-5"}, {"t": "1e9"}):
        with pytest.raises(ApiError, match="invalid value for t"):
            schema.query_int(query, "t", low=-1)
    with pytest.raises(ApiError, match="use one of not-running, next-exit"):
        schema.query_choice({"condition": "x"}, "condition", ("not-running", "next-exit"), "not-running")


@pytest.mark.parametrize("text, number", [("9", 9), ("KILL", 9), ("sigterm", 15), ("SIGUSR1", 10)])
def test_signals_by_number_or_name(text, number):
    assert schema.signal_number(text) == number


@pytest.mark.parametrize("text", ["99999", "0", "NOPE", "-1", ""])
def test_bad_signals_are_400(text):
    with pytest.raises(ApiError, match="Invalid signal") as caught:
        schema.signal_number(text)
    assert caught.value.status == 400


def test_an_empty_body_where_one_is_required():
    with pytest.raises(ApiError, match="request body is empty"):
        schema.body(Request("POST", "/containers/create", {}, b""), schema.CONFIG)
    assert schema.body(Request("POST", "/exec/x/start", {}, b""), schema.EXEC_START, required=False) == {}
