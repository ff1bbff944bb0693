"""The overlay model on paper: lookup through layers, copy-up, whiteouts, opaque directories and errnos.

No root needed: the kernel comparison is tests/privileged/test_overlay_vs_model.py. Here the model's path
walk and error order are checked against a plain directory, and ``labcore.kernel.overlay``'s mount call against
the syscall recorder.
"""
import errno
import itertools
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labcore import paths
from labcore.errors import BadInput
from labcore.kernel import overlay, syscalls
from labcore.lessons import union_fs
from labcore.lessons.overlay_model import WHITEOUT, Dir, File, Model, predict

BASE = {"etc": Dir(), "etc/hostname": File(b"base\n"), "var": Dir(), "var/log": Dir(),
        "var/log/boot": File(b"ok\n")}
APP = {"etc": Dir(), "etc/hostname": File(b"app\n"), "var": Dir(), "var/log": Dir(opaque=True),
       "var/log/app": File(b"")}


def test_the_top_layer_answers_first_and_opaque_dirs_hide_the_layers_below():
    merged, upper = predict([APP, BASE], [])
    assert merged["etc/hostname"] == File(b"app\n")
    assert "var/log/app" in merged and "var/log/boot" not in merged
    assert upper == {}


def test_a_write_copies_the_file_and_its_parents_up():
    merged, upper = predict([BASE], [("write", "var/log/boot", b"+")])
    assert upper == {"var": Dir(), "var/log": Dir(), "var/log/boot": File(b"ok\n+")}
    assert merged["var/log/boot"] == File(b"ok\n+")


def test_deleting_a_lower_file_leaves_a_whiteout_but_an_upper_only_file_goes_without_one():
    _, upper = predict([BASE], [("delete", "etc/hostname"), ("create", "etc/new", b"x"),
                                ("delete", "etc/new")])
    assert upper == {"etc": Dir(), "etc/hostname": WHITEOUT}


def test_a_directory_made_over_a_whiteout_is_opaque():
    ops = [("delete", "var/log/boot"), ("rmdir", "var/log"), ("mkdir", "var/log")]
    merged, upper = predict([BASE], ops)
    assert upper["var/log"] == Dir(opaque=True) and "var/log/boot" not in merged


def test_a_lower_whiteout_hides_the_base_and_a_new_dir_there_is_not_opaque():
    top = {"etc": Dir(), "etc/hostname": WHITEOUT}
    model = Model([top, BASE])
    assert model.lookup("etc/hostname") is None
    model.mkdir("etc/hostname")
    assert model.upper["etc/hostname"] == Dir()        # no upper whiteout was replaced


def test_renaming_a_lower_directory_is_exdev_and_a_new_one_becomes_opaque_in_a_merged_parent():
    model = Model([BASE])
    assert model.apply(("rename", "var", "srv")) == errno.EXDEV
    assert model.apply(("mkdir", "new")) == 0 and model.apply(("rename", "new", "var/new")) == 0
    assert model.upper["var/new"] == Dir(opaque=True)
    assert model.apply(("mkdir", "var/new/a")) == 0 and model.apply(("rename", "var/new/a", "var/new/b")) == 0
    assert model.upper["var/new/b"] == Dir()            # its parent has no lower layer: nothing to hide


@pytest.mark.parametrize("op, code", [
    (("rmdir", "var"), errno.ENOTEMPTY), (("delete", "var"), errno.EISDIR),
    (("mkdir", "etc/hostname/x"), errno.ENOTDIR), (("create", "nope/x", b""), errno.ENOENT),
    (("rename", "var", "var/log/x"), errno.EINVAL), (("rename", "var/log", "var"), errno.ENOTEMPTY),
    (("rename", "etc/hostname", "var"), errno.EISDIR), (("write", "etc", b""), errno.EISDIR),
])
def test_errors_carry_the_kernels_errno(op, code):
    assert Model([BASE]).apply(op) == code


# --- the path walk against a plain directory (no overlay, no root) ----------------------------------------

NAMES = ("a", "b")
PATHS = ["/".join(p) for depth in (1, 2, 3) for p in itertools.product(NAMES, repeat=depth)]
path = st.sampled_from(PATHS)
operation = st.one_of(
    st.tuples(st.just("create"), path, st.just(b"1")), st.tuples(st.just("write"), path, st.just(b"2")),
    st.tuples(st.just("delete"), path), st.tuples(st.just("rename"), path, path),
    st.tuples(st.just("mkdir"), path), st.tuples(st.just("rmdir"), path))


@settings(max_examples=200, deadline=None, database=None)
@given(ops=st.lists(operation, max_size=20))
def test_with_one_empty_layer_the_model_behaves_like_a_plain_directory(ops):
    """Over an empty lower layer no name needs a whiteout: the model must agree with the VFS on every errno
    and on the tree (the order of its checks is the VFS's)."""
    model = Model([{}])
    with tempfile.TemporaryDirectory(prefix="labcore-plain-") as root:
        assert [union_fs.apply_op(root, op) for op in ops] == [model.apply(op) for op in ops]
        assert union_fs.read_layer(root, None) == model.merged()


# --- labcore.kernel.overlay without the kernel ---------------------------------------------------------------------

def test_the_mount_lists_the_top_layer_first(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)      # root's mount, on the host (a user's is in a keeper)
    top, base = tmp_path / "top", tmp_path / "base"
    top.mkdir(), base.mkdir()
    with syscalls.use(syscalls.Recorder()) as recorder:
        with union_fs.create_overlay([top, base]) as mounted:
            name, (source, target, fstype, flags, options) = recorder.calls[0]
            assert (name, source, fstype, target) == ("mount", "overlay", "overlay", str(mounted.merged))
            assert options.startswith(f"lowerdir={top}:{base},upperdir={mounted.upper},")
            assert mounted.upper.is_dir() and mounted.work.is_dir()
    assert not mounted.upper.parent.exists()


def test_a_bad_layout_is_refused_before_anything_is_made(tmp_path):
    with pytest.raises(BadInput):
        union_fs.create_overlay([])
    with pytest.raises(BadInput):
        overlay.mount_overlay([tmp_path], tmp_path / "u", tmp_path / "w", tmp_path / "m")
    colon = tmp_path / "a:b"
    colon.mkdir()
    with pytest.raises(BadInput):
        union_fs.create_overlay([colon])
    assert not paths.scratch_dir().exists() or not any(paths.scratch_dir().iterdir())
