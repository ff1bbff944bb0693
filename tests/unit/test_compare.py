"""labcore.lessons.vs_vms without root: medians, ratios and the table from given times, the stacks diagram, timing a
real unprivileged program, and the VM and Docker rows with their harnesses faked."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labcore.errors import LabError, NotSupportedHere
from labcore.lessons import diagrams, vs_vms
from labcore.lessons.evidence import NOT_RUN, Step

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
DIAGRAMS_DIR = Path(__file__).resolve().parents[2] / "diagrams"


def comparison(docker_missing: str = "") -> vs_vms.Comparison:
    rows = [vs_vms.Row("process", "(a)", "fork+exec", [0.001, 0.003, 0.002], [500_000]),
            vs_vms.Row("container", "(b)", "api", [0.05, 0.07, 0.04], [4 << 20, 6 << 20]),
            vs_vms.Row("docker", "(c)", "cli", [0.4, 0.5], missing=docker_missing),
            vs_vms.Row("vm", "(d)", "qemu", [5.0, 6.0, 7.0], [240 << 20])]
    return vs_vms.Comparison({row.key: row for row in rows})


def test_medians_and_ratios_come_from_the_runs():
    measured = comparison()
    assert measured.rows["container"].median == 0.05 and measured.rows["container"].memory_median == 5 << 20
    assert measured.ratio("vm", "container") == pytest.approx(120)
    assert measured.ratios()["labcore container ÷ plain process"] == pytest.approx(25)


def test_a_missing_row_says_why_and_has_no_ratio():
    measured = comparison(docker_missing="dockerd is not installed: apt-get install docker.io")
    measured.rows["docker"].seconds = []
    assert measured.ratio("vm", "docker") is NOT_RUN
    assert str(measured.ratio("vm", "docker") > 1) == "(not run here)"
    docker = [line for line in measured.table() if line[0] == "(c)"][0]
    assert docker[2] == "not measured" and "apt-get install docker.io" in docker[4]
    assert "VM boot ÷ docker run: not measured" in str(measured)
    assert "not measured" in measured._repr_html_()


def test_figures_are_printed_in_readable_units():
    assert vs_vms.seconds_text(0.0123) == "12.3 ms" and vs_vms.seconds_text(5.25) == "5.25 s"
    assert vs_vms.ratio_text(1234.4) == "1,234×" and vs_vms.ratio_text(2.54) == "2.5×"
    assert vs_vms.seconds_text(None) == "–" and vs_vms.ratio_text(None) == "not measured"


def test_stacks_count_the_layers_and_carry_the_measurements():
    source = vs_vms.stacks_dot(comparison())
    assert "Containers: 2 layers between an app and the hardware" in source
    assert "Virtual machines: 4 layers between an app and the hardware" in source
    assert "first output after 6.00 s (median of 3), 240 MiB" in source
    assert "first output after 50.0 ms (median of 3), 5 MiB" in source
    assert source.count('label="Guest OS kernel"') == 3 and source.count('label="Bins/Libs"') == 6


def test_stacks_without_measurements_say_so():
    assert vs_vms.stacks_dot().count("not measured on this host") == 2
    missing = comparison()
    missing.rows["vm"] = vs_vms.Row("vm", "(d)", "qemu", missing="qemu-system-x86_64 not found")
    assert "not measured on this host: qemu-system-x86_64 not found" in vs_vms.stacks_dot(missing)


@needs_dot
def test_stacks_render_and_the_stored_diagram_is_a_measured_one():
    assert diagrams.render_svg(vs_vms.stacks_dot(comparison())).startswith("<svg")
    stored = (DIAGRAMS_DIR / "stacks.gv").read_text()
    assert stored.startswith('digraph "containers vs virtual machines"') and stored.count("measured here") == 2
    assert (DIAGRAMS_DIR / "stacks.svg").read_text() == diagrams.render_svg(stored), \
        "run `python -m labcore.lessons.vs_vms` to measure and regenerate diagrams/stacks.*"


def test_first_output_times_a_real_program_and_refuses_a_failure():
    seconds, rss = vs_vms.first_output([sys.executable, "-c", "print('hi')"])
    assert seconds > 0 and rss > 0
    with pytest.raises(LabError, match="exited 3"):
        vs_vms.first_output([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"])


def test_peak_rss_finds_children_by_name():
    child = subprocess.Popen(["sleep", "5"])
    try:
        with vs_vms.PeakRss("sleep", interval=0.01) as rss:
            time.sleep(0.2)
        assert child.pid in vs_vms.children_named("sleep") and rss.peak > 0
    finally:
        child.kill()
        child.wait()


def fake_boot(seconds: float) -> Step:
    return Step("boot", "qemu", data={"seconds": seconds})


def test_vm_row_counts_boots_already_taken(monkeypatch):
    monkeypatch.setattr(vs_vms.vm, "accelerator", lambda: ("tcg", "/dev/kvm is served by kvm_pvm"))
    monkeypatch.setattr(vs_vms.vm, "boot_marker", lambda: fake_boot(4.0))
    row = vs_vms.time_vm(3, boots=[fake_boot(6.0)])
    assert row.seconds == [6.0, 4.0, 4.0] and row.median == 4.0
    assert "tcg: /dev/kvm is served by kvm_pvm" in row.how and "tcg" in row.label


def test_vm_row_without_qemu_says_why(monkeypatch):
    def missing():
        raise NotSupportedHere("qemu-system-x86_64 not found", fix="apt-get install qemu-system-x86")
    monkeypatch.setattr(vs_vms.vm, "accelerator", lambda: ("tcg", "no /dev/kvm"))
    monkeypatch.setattr(vs_vms.vm, "boot_marker", missing)
    row = vs_vms.time_vm(2)
    assert not row.seconds and "apt-get install qemu-system-x86" in row.missing


def test_docker_row_without_dockerd_says_why(monkeypatch):
    monkeypatch.setattr(vs_vms.dockerd, "dockerd_unavailable_reason", lambda: "dockerd is not installed")
    row = vs_vms.time_docker(5)
    assert not row.seconds and row.missing == "dockerd is not installed"
