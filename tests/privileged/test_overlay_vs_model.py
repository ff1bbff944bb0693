"""The model against the kernel: random operations on random layers, same result on paper and on a mount.

Each example writes 1-3 lower layers (files, directories and, above the base, whiteouts and opaque
directories, as image layers have), mounts an overlay on a tmpfs, runs up to 20 operations through it and
through ``overlay_model.Model``, and compares every errno, the merged view and the upperdir (types,
contents, whiteouts, opaque xattrs).
"""
import collections
import errno
import itertools
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from labcore.kernel import overlay, syscalls
from labcore.lessons import union_fs
from labcore.kernel.journal import Scope
from labcore.lessons.overlay_model import WHITEOUT, Dir, File, Model, parent_of
from tests.conftest import privileged

pytestmark = privileged

NAMES = ("a", "b")
PATHS = ["/".join(parts) for depth in (1, 2, 3) for parts in itertools.product(NAMES, repeat=depth)]
# Each depth equally likely, so that operations mostly name paths that exist, or whose parent does.
path = st.one_of(*(st.sampled_from([p for p in PATHS if p.count("/") == depth]) for depth in (0, 1, 2)))
data = st.sampled_from([b"", b"1", b"22"])
operation = st.one_of(
    st.tuples(st.just("create"), path, data), st.tuples(st.just("write"), path, data),
    st.tuples(st.just("delete"), path), st.tuples(st.just("rename"), path, path),
    st.tuples(st.just("mkdir"), path), st.tuples(st.just("rmdir"), path))


# docker's `rm -r a; mkdir a`, then renames into and over directories of upper origin.
REPLACE_DIRECTORY = [("rmdir", "a"), ("delete", "a/a"), ("rmdir", "a"), ("mkdir", "a"), ("mkdir", "b"),
                     ("rename", "b", "b/a"), ("rename", "b", "a/b"), ("mkdir", "b"), ("create", "b/a", b"1"),
                     ("rename", "a", "b"), ("rename", "a", "a/a")]
# A new directory moved into a merged one becomes opaque; a lower directory cannot move (EXDEV).
MOVE_DIRECTORIES = [("mkdir", "b"), ("rename", "b", "a/a"), ("rename", "a", "b"), ("write", "a/b", b"22")]

# Kinds of entry a layer may have at each path, "absent" first so that failures shrink to sparse trees.
# Directories are frequent so that deeper paths exist; whiteouts and opaque directories only above the base.
BASE_KINDS = ["absent", "dir", "dir", "file"]
UPPER_KINDS = ["absent", "absent", "absent", "dir", "file", "whiteout", "opaque"]


@st.composite
def lower_layers(draw) -> list[dict]:
    """1-3 layers, returned top first as lowerdir= lists them."""
    below: list[dict] = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = draw(st.lists(st.sampled_from(UPPER_KINDS if below else BASE_KINDS),
                              min_size=len(PATHS), max_size=len(PATHS)))
        layer: dict = {}
        for name, kind in sorted(zip(PATHS, kinds)):
            if kind == "absent" or (parent_of(name) and not isinstance(layer.get(parent_of(name)), Dir)):
                continue                                # a layer is a tree: parents first
            if kind == "whiteout" and not hides_something(layer, below, name):
                continue
            layer[name] = {"file": lambda: File(draw(data)), "dir": Dir, "opaque": lambda: Dir(True),
                           "whiteout": lambda: WHITEOUT}[kind]()
        below.insert(0, layer)
    return below


def hides_something(layer: dict, below: list[dict], name: str) -> bool:
    """Keep a lower whiteout only where it hides a name below it in a merged directory, as image layers do:
    elsewhere readdir would list it in a directory that overlayfs passes through unmerged."""
    try:
        _, stack = Model([layer, *below]).resolve(parent_of(name))
        return len(stack) > 1 and Model(below).lookup(name) is not None
    except OSError:
        return False


def names(codes: list[int]) -> list[str]:
    return [errno.errorcode.get(code, "ok") for code in codes]


def test_kernel_matches_model():
    with Scope() as scope:
        tmpfs, _ = overlay.make_scratch_dir("tmpfs", scope)
        syscalls.mount("tmpfs", str(tmpfs), "tmpfs", 0, "size=64m,mode=0755")
        scope.record("mount", str(tmpfs), "umount", target=str(tmpfs))
        counter, seen = itertools.count(), collections.Counter()

        @settings(max_examples=500, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(lowers=lower_layers(), ops=st.lists(operation, min_size=1, max_size=20))
        @example(lowers=[{"a": Dir(), "a/a": File(b"1")}], ops=REPLACE_DIRECTORY)   # rare at random
        @example(lowers=[{"a": Dir(), "a/b": File()}], ops=MOVE_DIRECTORIES)
        def check(lowers, ops):
            base = tmpfs / f"labcore-{next(counter)}"
            with Scope() as example_scope:
                base.mkdir()
                example_scope.record("directory", str(base), "rmtree", path=str(base))
                seen.update(run_both(base, lowers, ops, example_scope))

        check()
    # The comparison is only as good as the cases it met: make sure the interesting ones came up.
    assert next(counter) >= 500
    expected = {"whiteout in upper", "opaque in upper", "whiteout in a lower", "rename EXDEV",
                "rename ok", "rmdir ENOTEMPTY", "rename ENOTEMPTY", "rename EINVAL", "write ok"}
    assert expected <= set(seen), f"never met: {expected - set(seen)}"


def run_both(base: Path, lowers: list[dict], ops: list[tuple], scope: Scope) -> set[str]:
    directories = []
    for index, layer in enumerate(lowers):
        directories.append(base / f"lower{index}")
        directories[-1].mkdir()
        union_fs.write_layer(directories[-1], layer)
    model = Model(lowers)
    with overlay.mount_overlay(directories, base / "upper", base / "work", base / "merged", scope) as mount:
        kernel_errors = names(union_fs.run_ops(mount, ops))
        model_errors = names([model.apply(op) for op in ops])
        assert list(zip(ops, kernel_errors)) == list(zip(ops, model_errors))
        assert union_fs.read_layer(mount.merged, None) == model.merged()
        assert union_fs.read_layer(mount.upper) == model.upper
    return ({f"{op[0]} {error}" for op, error in zip(ops, kernel_errors)}
            | {"whiteout in upper" for entry in model.upper.values() if entry is WHITEOUT}
            | {"opaque in upper" for entry in model.upper.values() if entry == Dir(True)}
            | {"whiteout in a lower" for layer in lowers for entry in layer.values() if entry is WHITEOUT})
