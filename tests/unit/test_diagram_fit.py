"""Every diagram the package can draw fits a 1000-pixel page, and carries a PNG for untrusted notebooks.

Each DOT builder of labcore (any function that makes a ``diagrams.Graph``) is run here on sample state as
wide as the notebooks' own (eight namespaces of three processes, twelve overlay paths, a whole box), then
rendered the way a notebook cell renders it. A new builder fails ``test_every_builder_has_a_sample`` until
it gets a sample below.
"""
import ast
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import labcore
from labcore.kernel import overlay
from labcore.kernel.cgroups.limits import Limits
from labcore.lessons import (build_your_own, client_server, diagrams, namespaces, root_fs, run_flow, security,
                             union_fs, vs_vms, widgets)
from labcore.lessons.control_groups import tree_dot
from tests.unit.test_cgroups_v2 import FakeV2
from tests.unit.test_compare import comparison

pytestmark = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
PACKAGE = Path(labcore.__file__).parent


def builders_in_package() -> set[str]:
    """module:function for every function in labcore whose body makes a ``Graph``."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                calls = [call.func for call in ast.walk(node) if isinstance(call, ast.Call)]
                if any(getattr(func, "id", getattr(func, "attr", None)) == "Graph" for func in calls):
                    found.add(f"{module}:{node.name}")
    return found


# --- sample state, as wide as the notebooks' --------------------------------------------------------------

def distinct_namespaces(monkeypatch):
    """Every process in namespaces of its own: the widest membership drawing (03's setns step)."""
    def fake(pid, kinds=namespaces.KINDS):
        pid = os.getpid() if pid == "self" else pid
        return {kind: 4026531000 + 10 * index + pid % 7 for index, kind in enumerate(kinds)}
    monkeypatch.setattr(namespaces, "namespaces_of", fake)


def membership(monkeypatch, tmp_path):
    distinct_namespaces(monkeypatch)
    return namespaces.membership_dot([os.getpid(), os.getppid(), 1])


def process_tree(monkeypatch, tmp_path):
    return namespaces.process_tree_dot(os.getpid(), ancestors=2)


def cgroup_tree(monkeypatch, tmp_path):
    fake = FakeV2(tmp_path, monkeypatch)
    scope = SimpleNamespace(record=lambda *args, **kwargs: None)
    outer = fake.manager.create("labcore-outer", scope)
    for name in ("labcore-a", "labcore-b", "labcore-c"):
        fake.manager.apply(fake.manager.create(name, scope, parent=outer), Limits(memory=64 << 20))
    return tree_dot(fake.manager)


def layer_stack(monkeypatch, tmp_path):
    """Two lowers, an upper with a copy-up, a new file and a whiteout, and the merged view of them (05)."""
    lower1, lower2, upper, merged = (tmp_path / name for name in ("lower1", "lower2", "upper", "merged"))
    for directory, files in ((lower2, ["bin/sh", "etc/passwd", "etc/group", "etc/hostname"]),
                             (lower1, ["usr/bin/python3", "etc/os-release", "home/user/.profile"]),
                             (upper, ["etc/passwd", "tmp/new-file", "root/.ash_history"]),
                             (merged, ["bin/sh", "etc/passwd", "etc/group", "etc/hostname", "usr/bin/python3",
                                       "etc/os-release", "home/user/.profile", "tmp/new-file",
                                       "root/.ash_history"])):
        for file in files:
            (directory / file).parent.mkdir(parents=True, exist_ok=True)
            (directory / file).write_text(file)
    live = overlay.Overlay([lower1, lower2], upper, tmp_path / "work", merged, "", scope=None, xattr=None)
    return union_fs.layer_stack_dot(live, 12, names=["init (/etc/hostname, hosts, resolv.conf)",
                                                   "layer 0123456789ab"])


def box(monkeypatch, tmp_path):
    """A whole box of 08: shim, pid 1 in eight new namespaces, overlay, cgroup, veth, published port."""
    distinct_namespaces(monkeypatch)
    monkeypatch.setattr(build_your_own, "cmdline", lambda pid: ["httpd", "-f", "-p", "80"])
    monkeypatch.setattr(build_your_own.os.path, "ismount", lambda path: True)
    monkeypatch.setattr(build_your_own.network, "link_exists", lambda name: True)
    monkeypatch.setattr(build_your_own, "open_manager", lambda: SimpleNamespace(
        limits_of=lambda group: {"memory.max": "67108864", "pids.max": "10"}), raising=False)
    import labcore.kernel.cgroups
    monkeypatch.setattr(labcore.kernel.cgroups, "open_manager", lambda: SimpleNamespace(
        limits_of=lambda group: {"memory.max": "67108864", "pids.max": "10"}))
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/hostname").write_text("box1")
    sample = SimpleNamespace(
        id="1148741f969b" * 5 + "abcd", pid=os.getpid(), done=["start", "unshare", "pivot_root"],
        shim=SimpleNamespace(pid=os.getppid(), status=None), directory=tmp_path / "labcore-box-1148741f969b",
        stack=SimpleNamespace(upper=upper, lowers=[tmp_path / "init", tmp_path / ("a" * 64)],
                              merged=tmp_path / "merged"),
        overlay=SimpleNamespace(view=tmp_path / "merged", keeper=None), group=SimpleNamespace(path=tmp_path),
        endpoint=SimpleNamespace(network=SimpleNamespace(bridge="lcbr0", gateway="10.88.0.1/16"),
                                 host_ifname="lc1148741f96", ip="10.88.0.2/16"),
        published=SimpleNamespace(pid=os.getpid(), host_ip="127.0.0.1", host_port=8080, container_port=80),
        usernet=None, _link=lambda name: "UP, on lcbr0")
    return build_your_own.Box.diagram(sample)


def defence(monkeypatch, tmp_path):
    """The layers of defence around a default container's pid 1 (09)."""
    layers = [("user namespace", "uid_map 0 0 4294967295 (root is root)"),
              ("namespaces", "mnt, uts, ipc, pid, net, cgroup"),
              ("device cgroup", "9 rules: c 1:3 rwm, c 1:5 rwm, c 1:7 rwm, c 1:8 rwm, ..."),
              ("capabilities", "CapEff 00000000a80425fb: 14 of 41"), ("seccomp", "filter, NoNewPrivs 0"),
              ("masked paths", "12: /proc/acpi, /proc/asound, /proc/interrupts, /proc/kcore, /proc/keys, ..."),
              ("read-only paths", "5: /proc/bus, /proc/fs, /proc/irq, /proc/sys, /proc/sysrq-trigger")]
    return security.defence_dot(4242, "labcore-defence", layers)


# 02's live tree of Docker's processes, before and after dockerd's SIGKILL, as /proc showed them on the VM.
DOCKER_TREE = {
    "before": {"dockerd": {"pid": 23102, "name": "dockerd", "ppid": 23098, "state": "sleeping", "parent": "python3"},
               "containerd": {"pid": 23110, "name": "containerd", "ppid": 23102, "state": "sleeping"},
               "shim": {"pid": 23218, "name": "containerd-shim", "ppid": 1, "state": "sleeping",
                        "parent": "systemd"},
               "container": {"pid": 23240, "name": "sleep", "ppid": 23218, "state": "sleeping"}},
    "after": {"dockerd": {"pid": 23102, "state": "gone"}, "containerd": {"pid": 23110, "state": "zombie"},
              "shim": {"pid": 23218, "name": "containerd-shim", "ppid": 1, "state": "sleeping"},
              "container": {"pid": 23240, "name": "sleep", "ppid": 23218, "state": "sleeping"}}}


def mount_trees(monkeypatch, tmp_path):
    """06's three mount trees: a host of 40 mounts folded into one node, a chroot, a pivot_root (tests/unit/
    test_rootfs.py's, with the host grown to a desktop's)."""
    from tests.unit.test_rootfs import HOST_MOUNTINFO, PIVOTED_MOUNTINFO, ROOT
    host = HOST_MOUNTINFO + [f"{40 + n} 27 0:{40 + n} / /sys/fs/cgroup/controller-{n} rw - cgroup cgroup rw"
                             for n in range(36)]
    return root_fs.mount_tree_dot(host, ROOT, PIVOTED_MOUNTINFO)


SAMPLES = {
    "labcore.lessons.diagrams:course_map": lambda monkeypatch, tmp_path: diagrams.course_map(),
    "labcore.lessons.run_flow:flow_dot": lambda monkeypatch, tmp_path: run_flow.flow_dot("pull"),
    "labcore.lessons.client_server:connection_dot": lambda monkeypatch, tmp_path: client_server.connection_dot(
        {"client": {"pid": 4242, "fd": 57}, "socket": "/home/student/.local/state/labcore/tmp/labd.sock",
         "mode": "srw-rw----", "daemon": {"pid": 4299, "user": "student", "listening_fd": 3,
                                          "accepted": {"fd": 12, "inode": 31549}}}),
    "labcore.lessons.client_server:docker_tree_dot": lambda monkeypatch, tmp_path: client_server.docker_tree_dot(
        DOCKER_TREE),
    "labcore.lessons.vs_vms:stacks_dot": lambda monkeypatch, tmp_path: vs_vms.stacks_dot(comparison()),
    "labcore.lessons.namespaces:membership_dot": membership,
    "labcore.lessons.namespaces:process_tree_dot": process_tree,
    "labcore.lessons.control_groups:tree_dot": cgroup_tree,
    "labcore.lessons.union_fs:layer_stack_dot": layer_stack,
    "labcore.lessons.build_your_own:diagram": box,
    "labcore.lessons.root_fs:mount_tree_dot": mount_trees,
    "labcore.lessons.security:defence_dot": defence,
    "labcore.lessons.widgets:_arrows_from_kernel": lambda monkeypatch, tmp_path: widgets._arrows_from_kernel(
        "cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"),
}


def test_every_builder_has_a_sample():
    missing = builders_in_package() - set(SAMPLES)
    assert not missing, f"give these DOT builders a sample in {Path(__file__).name}: {sorted(missing)}"
    assert not set(SAMPLES) - builders_in_package(), "a sample names a builder that is gone"


@pytest.mark.parametrize("builder", sorted(SAMPLES))
def test_every_diagram_fits_a_1000_pixel_page(builder, monkeypatch, tmp_path):
    source = SAMPLES[builder](monkeypatch, tmp_path)
    shown = diagrams.show(source)
    assert shown.png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = diagrams.png_size(shown.png)
    assert shown.rendered.width_px <= diagrams.MAX_WIDTH_PX, f"{builder}: {shown.rendered.options}"
    assert width <= diagrams.MAX_WIDTH_PX
    # The PNG is the SVG's size, give or take graphviz's rounding to whole pixels.
    assert abs(width - shown.rendered.width_px) <= 1 and abs(height - shown.rendered.height_px) <= 1
    assert shown._repr_png_()[1] == {"width": width, "height": height}
    assert shown.svg.startswith("<svg")


def test_a_wide_flow_is_turned_down_the_page():
    rendered = diagrams.render(run_flow.flow_dot("pull"))           # 1538 pt across, drawn left to right
    assert rendered.options == ["-Grankdir=TB"]
    assert rendered.width_px <= diagrams.MAX_WIDTH_PX < rendered.height_px


def test_a_bottom_up_stack_keeps_its_direction_and_is_scaled():
    rendered = diagrams.render(vs_vms.stacks_dot(comparison()))
    assert not any("rankdir" in option for option in rendered.options)
    assert rendered.options[-1].startswith("-Gsize=") and rendered.width_px <= diagrams.MAX_WIDTH_PX


def test_a_diagram_that_fits_is_drawn_as_written():
    source = diagrams.Graph("g", rankdir="LR").edge("a", "b").source()
    assert diagrams.render(source).options == []


def test_the_png_is_the_same_bytes_for_the_same_source():
    source = run_flow.flow_dot("start")
    assert diagrams.show(source).png == diagrams.show(source).png


def test_img_html_embeds_the_png_for_sanitized_html():
    shown = diagrams.show(diagrams.Graph("a picture").edge("a", "b").source())
    assert shown.img_html().startswith('<img src="data:image/png;base64,iVBORw0KGgo')
    assert f'width="{diagrams.png_size(shown.png)[0]}"' in shown.img_html() and 'alt="a picture"' in shown.img_html()
