"""Docker's resource flags parsed as Docker parses them; bad values refused with the accepted form."""
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labcore.errors import BadInput
from labcore.kernel.cgroups import limits
from labcore.kernel.cgroups.limits import DENY_ALL, DeviceRule, Limits, Throttle, parse_run_limits, parse_size


@pytest.mark.parametrize("text, expected", [
    ("64m", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("1.5g", 3 << 29),
    ("1mb", 1 << 20), ("2MiB", 2 << 20), ("100", 100), ("100b", 100),
])
def test_sizes_are_powers_of_1024(text, expected):
    assert parse_size(text, "--memory") == expected


@given(st.integers(min_value=0, max_value=1 << 20), st.sampled_from(["", "b", "k", "m", "g"]))
def test_any_number_with_a_unit_parses(number, unit):
    assert parse_size(f"{number}{unit}", "--memory") == number * {"": 1, "b": 1, "k": 1024, "m": 1 << 20,
                                                                 "g": 1 << 30}[unit]


@pytest.mark.parametrize("flag, value", [
    ("memory", "10XB"), ("memory", "-1"), ("memory", "64 megs"), ("memory", "1k"), ("memory", ""),
    ("cpus", "-1"), ("cpus", "0"), ("cpus", "half"), ("cpus", str((os.cpu_count() or 1) + 1)),
    ("cpu_shares", "-1"), ("cpu_shares", "1"), ("cpu_shares", "262145"), ("cpu_shares", "1.5"),
    ("pids_limit", "-2"), ("pids_limit", "ten"),
])
def test_bad_values_are_refused_naming_the_accepted_form(flag, value):
    with pytest.raises(BadInput) as caught:
        parse_run_limits(**{flag: value})
    assert f"--{flag.replace('_', '-')}" in str(caught.value) and "e.g." in caught.value.fix


def test_the_flags_become_limits():
    got = parse_run_limits(memory="64m", cpus="0.5", cpu_shares="512", pids_limit="10")
    assert got == Limits(memory=64 << 20, cpus=0.5, cpu_shares=512, pids=10)
    assert (got.cpu_quota_us, got.cpu_period_us, got.cpu_weight) == (50_000, 100_000, 20)


def test_nothing_given_limits_nothing():
    assert parse_run_limits() == Limits()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_pids_limit_minus_one_or_zero_is_unlimited_as_in_docker(value):
    assert parse_run_limits(pids_limit=value).pids is None


def test_memory_swap_is_memory_plus_swap():
    assert parse_run_limits(memory="64m", memory_swap="128m").memory_swap == 128 << 20
    with pytest.raises(BadInput, match="memory-swap"):
        parse_run_limits(memory="64m", memory_swap="32m")
    with pytest.raises(BadInput, match="memory-swap"):
        parse_run_limits(memory_swap="128m")


def test_throttles_name_the_block_device_by_its_numbers(monkeypatch):
    monkeypatch.setattr(limits, "block_device_numbers", lambda path: (8, 0))
    got = parse_run_limits(device_read_bps=["/dev/sda:1mb"], device_write_bps=["/dev/sda:10m"])
    assert got.read_bps == (Throttle("/dev/sda", 8, 0, 1 << 20),)
    assert got.write_bps == (Throttle("/dev/sda", 8, 0, 10 << 20),)


@pytest.mark.parametrize("value", ["/dev/sda", "sda:1mb", "/dev/sda:fast", "/dev/sda:0"])
def test_bad_throttles_are_refused(value, monkeypatch):
    monkeypatch.setattr(limits, "block_device_numbers", lambda path: (8, 0))
    with pytest.raises(BadInput, match="--device-read-bps"):
        parse_run_limits(device_read_bps=[value])


def test_a_throttle_needs_a_real_block_device():
    with pytest.raises(BadInput, match="not a block device"):
        parse_run_limits(device_write_bps=["/dev/null:1mb"])
    with pytest.raises(BadInput, match="no device"):
        parse_run_limits(device_write_bps=["/dev/labcore-no-such-disk:1mb"])


def test_device_rules_come_after_deny_all_and_the_defaults_as_in_docker():
    got = parse_run_limits(device_cgroup_rule=["c 1:3 rwm", "b 8:* r"]).devices
    assert got[0] == DENY_ALL and str(got[0]) == "a"
    assert got[-2:] == (DeviceRule("c", "1", "3", "rwm"), DeviceRule("b", "8", "*", "r"))
    assert str(got[-1]) == "b 8:* r"
    assert DeviceRule("c", "136", "*", "rwm") in got          # the default allow list: ptys


@pytest.mark.parametrize("rule", ["c 1:3", "x 1:3 rwm", "c 1:3 rwx", "c one:3 r", "c 1:3 rwmr"])
def test_bad_device_rules_are_refused(rule):
    with pytest.raises(BadInput, match="TYPE MAJOR:MINOR ACCESS"):
        parse_run_limits(device_cgroup_rule=[rule])
