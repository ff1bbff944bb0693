"""The root filesystem, shown: an image is a directory, chroot(2) can be escaped, pivot_root(2) cannot (notebook 06).

``make_rootfs`` unpacks the busybox image into a directory; ``look_inside`` compares it with the host's "/".
Then the escape of man 2 chroot (NOTES), done for real by a root child: chroot into a subdirectory, which
leaves the working directory above the new root; climb with ".." past the old one; chroot("."). After chroot
the climb ends on the host's "/"; after pivot_root in a new mount namespace (``labcore.kernel.rootfs``, runc's
order) it ends at the image's root, since nothing in that namespace leads to the host's files any more.

``mount_trees`` reads /proc/self/mountinfo around both: after chroot the host's mounts are hidden from it (they
lie above the new root) yet all still there, which is why the climb works; after pivot_root and umount2 of the
old root, one mount is left in the new namespace, and ``mount_tree_dot`` draws the three trees.

Next: ``labcore.runtime.container`` starts a command as pid 1 on such a root.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.image import baseimage, oci
from labcore.kernel import journal, process, syscalls, userns
from labcore.kernel.namespaces import make_mounts_private
from labcore.kernel.rootfs import bind_root, pivot_to
from labcore.lessons import display, hosts
from labcore.lessons.diagrams import Graph
from labcore.lessons.evidence import Step, current_mode

ESCAPE_DIR = "labcore-escape"
_REFUSED = (NeedsPrivilege, NotSupportedHere)      # the host forbids it: the step says so
HOST_ROOT, IMAGE_ROOT = "the host's /", "the image's root"


# --- the image's files in a directory -------------------------------------------------------------------

def unpack(image, destination: str | os.PathLike, undo: journal.Scope | journal.Journal) -> Path:
    """Extract ``image``'s layers into a new directory, recorded for removal before the first file lands."""
    destination = Path(destination)
    if os.path.lexists(destination):              # not ours: never journaled for removal
        raise LabError(f"{destination} exists already: the image is unpacked into a new directory",
                       syscall="mkdir", path=str(destination), fix="give a path that does not exist yet")
    undo.record("directory", str(destination), "rmtree", path=str(destination))      # before it exists
    destination.mkdir(parents=True)
    oci.Store().unpack(image, destination)
    return destination


def make_rootfs(image=None) -> Path:
    """The busybox image (or ``image``) unpacked into ``labcore-rootfs-<id>`` under the scratch directory."""
    if image is None:
        image = baseimage.ensure_base_image()
    directory = paths.scratch_dir() / f"{paths.PREFIX}-rootfs-{secrets.token_hex(6)}"
    return unpack(image, directory, journal.Journal())


# --- evidence: where "/" is -----------------------------------------------------------------------------

def _identity(path: str | os.PathLike) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def view_of_root(known: dict[tuple[int, int], str]) -> dict[str, object]:
    """What this process sees at "/": which directory it is (by device and inode), its names, the OS."""
    where = known.get(_identity("/"), "device %d, inode %d" % _identity("/"))
    names = sorted(os.listdir("/"))
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                       if "=" in line).get("PRETTY_NAME", "?").strip('"')
    except OSError:
        release = "absent"
    shown = names if len(names) <= 14 else names[:10] + [f"... {len(names)} names"]
    return {"/ is": where, "ls /": shown, "/etc/os-release": release}


def _landmarks(root: str | os.PathLike) -> dict[tuple[int, int], str]:
    return {_identity("/"): HOST_ROOT, _identity(root): IMAGE_ROOT}


def look_inside(root: str | os.PathLike) -> Step:
    """The host's "/" beside the image's root filesystem: what a container will see instead."""
    known = _landmarks(root)
    before = view_of_root(known)
    try:
        after = process.run_in_child(_chrooted_view, str(root), known)
    except _REFUSED as err:
        return hosts.refuse("What is in the image", f"ls {root}", err)
    files = sum(len(names) for _, _, names in os.walk(root))
    after["files"] = files
    return Step("What is in the image", f"ls {root}", before, after, current_mode(), columns=("host", "image"),
                note="an image is a directory of files: no kernel, no init, no host",
                data={"path": str(root), "files": files, "inside": after["/ is"] == IMAGE_ROOT,
                      "root": after["/ is"], "os_release": after["/etc/os-release"]})


def _chrooted_view(root: str, known: dict) -> dict:
    _gain_chroot_privilege()
    syscalls.chroot(root)
    os.chdir("/")
    return view_of_root(known)


def _gain_chroot_privilege() -> None:
    # chroot(2) needs CAP_SYS_CHROOT; a user namespace grants it to a non-root user (user_namespaces(7)).
    if os.geteuid() != 0:
        userns.enter()


# --- chroot, its escape, and pivot_root -------------------------------------------------------------------

def chroot_into(root: str | os.PathLike) -> Step:
    """chroot(2) in a child: "/" now resolves to the image's directory."""
    known = _landmarks(root)
    action = f'chroot("{root}"); chdir("/")'
    try:
        after = process.run_in_child(_chrooted_view, str(root), known)
    except LabError as err:
        return hosts.refuse("chroot into the image", action, err)
    return Step("chroot into the image", action, view_of_root(known), after, current_mode(),
                note='the child\'s "/" is the image\'s directory; the mounts are still the host\'s',
                data={"inside": after["/ is"] == IMAGE_ROOT, "root": after["/ is"]})


def try_escape(known: dict) -> dict:
    """The classic escape (man 2 chroot): move the root below the working directory, then climb past it."""
    os.makedirs(ESCAPE_DIR, exist_ok=True)
    syscalls.chroot(ESCAPE_DIR)        # the root moves down; the working directory stays above it
    for _ in range(64):                # ".." stops only at the root, and this walk never meets it
        os.chdir("..")
    syscalls.chroot(".")               # wherever the climb ended becomes "/"
    os.chdir("/")
    return view_of_root(known)


def escape_chroot(root: str | os.PathLike) -> Step:
    """A root process leaves its chroot, for real: before = inside the chroot, after = after the escape."""
    action = f'chroot("{root}"); mkdir("{ESCAPE_DIR}"); chroot("{ESCAPE_DIR}"); chdir("..") x64; chroot(".")'
    return _escape_step("Escape from a chroot", action, _chroot_then_escape, root,
                        "chroot changed where / starts, not what can be reached: the climb ends on the host")


def escape_pivot_root(root: str | os.PathLike) -> Step:
    """The same escape after pivot_root in a new mount namespace: the climb ends at the image's root."""
    action = (f'unshare(CLONE_NEWNS); bind "{root}"; pivot_root(".", "."); umount2(old root, MNT_DETACH); '
              f'then the same escape')
    return _escape_step("Escape after pivot_root", action, _pivot_then_escape, root,
                        "the host's root is no longer in this mount namespace: there is nowhere to climb to")


def compare_escapes(root: str | os.PathLike) -> Step:
    """The escape side by side: before = after chroot, after = after pivot_root."""
    chrooted, pivoted = escape_chroot(root), escape_pivot_root(root)
    title, action = "The escape: chroot vs pivot_root", "try_escape() after chroot / after pivot_root"
    for step in (chrooted, pivoted):
        if not step.permitted:
            return Step.refused(title, action, step.reason)     # its reason, already explained
    return Step(title, action,
                chrooted.after, pivoted.after, current_mode(), columns=("after chroot", "after pivot_root"),
                note="chroot is a change of directory; pivot_root changes the mount namespace's root",
                data={"escaped_chroot": chrooted.data["escaped"], "escaped_pivot_root": pivoted.data["escaped"]})


def _escape_step(title: str, action: str, attempt, root, note: str) -> Step:
    try:
        before, after = process.run_in_child(attempt, str(root), _landmarks(root))
    except LabError as err:
        return hosts.refuse(title, action, err)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(Path(root, ESCAPE_DIR))
    return Step(title, action, before, after, current_mode(), note=note,
                data={"escaped": after["/ is"] == HOST_ROOT, "root_before": before["/ is"],
                      "root_after": after["/ is"]})


def _chroot_then_escape(root: str, known: dict) -> tuple[dict, dict]:
    _gain_chroot_privilege()
    syscalls.chroot(root)
    os.chdir("/")
    return view_of_root(known), try_escape(known)


def _pivot_then_escape(root: str, known: dict) -> tuple[dict, dict]:
    userns.unshare(syscalls.CLONE_NEWNS)
    make_mounts_private()
    bind_root(root)
    pivot_to(root)
    return view_of_root(known), try_escape(known)


# --- the mount tree, as mountinfo shows it, around chroot and pivot_root ------------------------------------

def mount_trees(root: str | os.PathLike) -> Step:
    """/proc/self/mountinfo of a child before and after chroot, and of another before and after pivot_root (in a
    new mount namespace, the old root detached): rows per call, the raw lines in data, the drawing in
    data["dot"]."""
    title = "The mount tree: chroot vs pivot_root"
    action = (f'chroot("{root}")  |  unshare(CLONE_NEWNS); bind "{root}"; pivot_root(".", "."); '
              f'umount2(old root, MNT_DETACH)')
    try:
        host, chrooted = process.run_in_child(_mountinfo_around, str(root), _prepare_chroot, _chroot_there)
        unshared, pivoted = process.run_in_child(_mountinfo_around, str(root), _unshare_and_bind, pivot_to)
    except LabError as err:
        return hosts.refuse(title, action, err)
    top, below = _root_mount(host), _root_mount(pivoted)
    gone = below["parent"] not in {mount["id"] for mount in map(display.parse_mountinfo_line, pivoted)}
    before = {"chroot": f"{_count(host)}; / is mount {top['id']} ({top['fstype']} {top['source']})",
              "pivot_root": f"{_count(unshared)}: the host's, copied by unshare(CLONE_NEWNS), and the bind of "
                            f"{display.short_name(root)}"}
    after = {"chroot": f"{_count(chrooted)} shown: the {len(host)} above the new root are hidden, not gone",
             "pivot_root": f"{_count(pivoted)}: / is mount {below['id']}, the bind; its parent {below['parent']}, "
                           f"the old root, {'detached' if gone else 'still there'}",
             "mountinfo after pivot_root": display.mount_table(pivoted)}
    return Step(title, action, before, after, current_mode(),
                note="chroot hides the host's mounts from mountinfo but keeps them in the namespace (the escape "
                     "reaches them); after pivot_root and umount2 the namespace holds only the image's root",
                data={"host": host, "chrooted": chrooted, "unshared": unshared, "pivoted": pivoted,
                      "shown_after_chroot": len(chrooted), "mounts_after_pivot_root": len(pivoted),
                      "old_root_gone": gone, "dot": mount_tree_dot(host, str(root), pivoted)})


def _count(lines: list[str]) -> str:
    return f"{len(lines)} mount{'s' * (len(lines) != 1)}"


def _mountinfo_around(root: str, prepare, change) -> tuple[list[str], list[str]]:
    """In a child: ``prepare(root)``, mountinfo, ``change(root)``, mountinfo again. The second is opened through a
    descriptor of /proc taken before (the new root has no /proc), and after the change: the kernel lists the
    mounts as seen from the opener's root and mount namespace at open(2) time (proc(5), fs/proc_namespace.c)."""
    proc = os.open("/proc", os.O_DIRECTORY | os.O_RDONLY)
    try:
        prepare(root)
        before = _read_mountinfo(proc)
        change(root)
        return before, _read_mountinfo(proc)
    finally:
        os.close(proc)


def _read_mountinfo(proc: int) -> list[str]:
    with open(os.open("self/mountinfo", os.O_RDONLY, dir_fd=proc)) as file:
        return file.read().splitlines()


def _prepare_chroot(root: str) -> None:
    _gain_chroot_privilege()


def _chroot_there(root: str) -> None:
    syscalls.chroot(root)
    os.chdir("/")


def _unshare_and_bind(root: str) -> None:
    """A mount namespace of its own, nothing in it propagating back, and the root a mount (pivot_root(2) needs
    one), as ``_pivot_then_escape`` does."""
    userns.unshare(syscalls.CLONE_NEWNS)
    make_mounts_private()
    bind_root(root)


def _root_mount(lines: list[str]) -> dict[str, str]:
    """The mount at "/": the last one there, the one on top (proc(5))."""
    return [mount for mount in map(display.parse_mountinfo_line, lines) if mount["mount point"] == "/"][-1]


def mount_tree_dot(host: list[str], root: str, pivoted: list[str]) -> str:
    """Three mount trees from mountinfo, each mount a node under its parent, the process's root marked: the
    host's (its root mount, the rest folded into one node), the same after chroot (the new root a directory
    inside a mount), and the new namespace after pivot_root, with the detached old root drawn as gone."""
    graph = Graph("mount trees: chroot and pivot_root", rankdir="TB", fontname="Helvetica", nodesep="0.2",
                  ranksep="0.35", newrank="true")
    graph.defaults("node", fontname="Helvetica", fontsize="10", shape="box", style="rounded")
    graph.defaults("edge", color="gray40", arrowsize="0.6")
    _draw_host_tree(graph, "before", host, root, chrooted=False)
    _draw_host_tree(graph, "chroot", host, root, chrooted=True)
    _draw_pivoted_tree(graph, pivoted)
    # One tree under the other, in the order they happen: an invisible edge from each to the next.
    graph.edge("before:rest", f"chroot:{_root_mount(host)['id']}", style="invis")
    graph.edge("chroot:dir", "pivot:marker", style="invis")
    return graph.source()


def _mount_label(mount: dict[str, str]) -> str:
    source = mount["source"] if len(mount["source"]) <= 24 else display.short_name(mount["source"])
    return f"{mount['id']}  {mount['mount point']}\n{mount['fstype']} {source}"


def _draw_host_tree(graph: Graph, stage: str, host: list[str], root: str, chrooted: bool) -> None:
    """The host's root mount, the mount that holds the image's directory, and the others folded into one node;
    the process's root marked: on "/", or after chroot on the image's directory, inside its mount."""
    mounts = list(map(display.parse_mountinfo_line, host))
    top, holder = _root_mount(host), _mount_holding(mounts, root)
    shown = {top["id"]: top, holder["id"]: holder}
    others = [mount for mount in mounts if mount["id"] not in shown]
    hidden = {"style": "rounded,dashed", "fontcolor": "gray40", "color": "gray50"} if chrooted else {}
    for mount in shown.values():
        graph.node(f"{stage}:{mount['id']}", _mount_label(mount), **hidden)
    if holder is not top:
        graph.edge(f"{stage}:{top['id']}", f"{stage}:{holder['id']}")
    names = ", ".join(list(dict.fromkeys(mount["mount point"] for mount in others
                                         if mount["parent"] == top["id"]))[:4])
    graph.node(f"{stage}:rest", f"{len(others)} more mounts\n{names}, …", shape="folder", **hidden)
    graph.edge(f"{stage}:{top['id']}", f"{stage}:rest")
    graph.node(f"{stage}:marker", "the process's root", shape="plaintext", fontcolor="darkgreen")
    nodes = [*(f"{stage}:{number}" for number in shown), f"{stage}:rest", f"{stage}:marker"]
    if not chrooted:
        graph.edge(f"{stage}:marker", f"{stage}:{top['id']}", color="darkgreen")
        title = f"before: the host's namespace, {len(host)} mounts in mountinfo"
    else:
        graph.node(f"{stage}:dir", f"{display.short_name(root)}/\na directory in mount {holder['id']}",
                   shape="folder", style="filled", fillcolor="lightyellow")
        graph.edge(f"{stage}:{holder['id']}", f"{stage}:dir", style="dotted")
        graph.edge(f"{stage}:marker", f"{stage}:dir", color="darkgreen")
        nodes.append(f"{stage}:dir")
        title = "after chroot: the same namespace;\nmountinfo shows none of them, all still there"
    graph.cluster(stage, title, nodes, style="rounded", color="gray60")


def _mount_holding(mounts: list[dict[str, str]], path: str) -> dict[str, str]:
    """The mount a directory lies in: the longest mount point above it, the last of those (the one on top)."""
    above = [(len(mount["mount point"]), number, mount) for number, mount in enumerate(mounts)
             if path == mount["mount point"] or path.startswith(mount["mount point"].rstrip("/") + "/")]
    return max(above, key=lambda found: found[:2])[2]


def _draw_pivoted_tree(graph: Graph, pivoted: list[str]) -> None:
    """The new namespace's mounts under their parents; a parent no longer listed is the detached old root."""
    mounts = list(map(display.parse_mountinfo_line, pivoted))
    ids = {mount["id"] for mount in mounts}
    nodes = []
    for mount in mounts:
        graph.node(f"pivot:{mount['id']}", _mount_label(mount), style="rounded,filled", fillcolor="lightblue")
        nodes.append(f"pivot:{mount['id']}")
        if mount["parent"] not in ids:
            graph.node(f"pivot:{mount['parent']}", f"{mount['parent']}  the old root\ngone: umount2(MNT_DETACH)",
                       style="rounded,dashed", fontcolor="gray40", color="gray50")
            graph.edge(f"pivot:{mount['parent']}", f"pivot:{mount['id']}", style="dashed", color="gray50")
            nodes.append(f"pivot:{mount['parent']}")
            ids.add(mount["parent"])
        elif mount["parent"] != mount["id"]:
            graph.edge(f"pivot:{mount['parent']}", f"pivot:{mount['id']}")
    top = _root_mount(pivoted)
    graph.node("pivot:marker", "the process's root", shape="plaintext", fontcolor="darkgreen")
    graph.edge("pivot:marker", f"pivot:{top['id']}", color="darkgreen")
    graph.cluster("pivot", f"after pivot_root: a new namespace, {len(mounts)} mount{'s' * (len(mounts) != 1)}",
                  [*nodes, "pivot:marker"], style="rounded", color="gray60")
