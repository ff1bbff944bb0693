"""The union filesystem on paper: overlayfs lookup, copy-up and whiteouts as a few dicts.

A layer is a dict from a path ("etc/hostname", no leading slash; the root is implicit) to an entry: a
``File``, a ``Symlink``, a ``Dir`` (maybe *opaque*) or a ``WHITEOUT``. ``Model(lowers, upper)`` stacks them
as the kernel does (Documentation/filesystems/overlayfs.rst), upper first, then the lower layers top first:

* lookup takes the first layer that has the name; a whiteout there means "no such file"; a directory
  merges with the directories of the same name below it, until an opaque one or a non-directory;
* the first change to a lower file copies it (and its parent directories) up into the upper layer;
* deleting a name that a lower layer still has leaves a whiteout; a directory made over a whiteout is
  opaque, so the old directory's files stay hidden;
* renaming a directory that a lower layer has fails with EXDEV unless the mount has ``redirect_dir=on``
  (off by default on this kernel: /sys/module/overlay/parameters/redirect_dir). A directory that only
  the upper layer has may move; moved into a merged directory it is marked opaque (fs/overlayfs/dir.c,
  ovl_rename), so it cannot pick up files a lower layer has under its new name.

``predict(lowers, ops)`` says what the kernel will show; ``tests/privileged/test_overlay_vs_model.py``
checks that against real mounts. Errors are ``OSError`` with the errno the kernel gives.

Next: ``labcore.lessons.union_fs`` mounts the real thing (``labcore.kernel.overlay``) and checks this model against it.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class File:
    data: bytes = b""


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Dir:
    opaque: bool = False        # trusted.overlay.opaque = "y": hide what lower layers have here


@dataclass(frozen=True)
class Whiteout:
    """A 0/0 character device in a layer: the name is deleted."""


WHITEOUT = Whiteout()
Entry = Union[File, Symlink, Dir, Whiteout]
Layer = dict
UPPER = 0                       # index of the upper layer in Model.layers; lowers[i] is layers[i + 1]


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def _fail(code: int, path: str):
    raise OSError(code, os.strerror(code), path)


class Model:
    """An overlay mount: ``lowers`` top first (as in lowerdir=), and the upper layer it writes to."""

    def __init__(self, lowers: list[Layer], upper: Layer | None = None):
        self.lowers = [dict(layer) for layer in lowers]
        self.upper: Layer = dict(upper or {})

    @property
    def layers(self) -> list[Layer]:
        return [self.upper, *self.lowers]

    # --- lookup ------------------------------------------------------------------------------------------

    def _lookup_in(self, stack: list[int], path: str) -> tuple[Entry | None, list[int]]:
        """The entry for ``path`` among the layers of its parent's ``stack``, and the layers it comes from."""
        found, layers = None, []
        for index in stack:
            entry = self.layers[index].get(path)
            if entry is None:
                continue
            if entry is WHITEOUT or (found is not None and not isinstance(entry, Dir)):
                break                       # deleted here, or a non-directory ends a directory's stack
            if found is None:
                found = entry
            layers.append(index)
            if not isinstance(entry, Dir) or entry.opaque:
                break
        return found, layers

    def resolve(self, path: str) -> tuple[Entry | None, list[int]]:
        """Walk ``path`` as the kernel does: ENOENT/ENOTDIR for a bad parent, None for a missing last name."""
        entry, stack = Dir(), list(range(len(self.layers)))   # the root merges every layer
        walked = []
        for name in path.split("/") if path else []:
            if entry is None:
                _fail(errno.ENOENT, path)
            if not isinstance(entry, Dir):
                _fail(errno.ENOTDIR, path)
            walked.append(name)
            entry, stack = self._lookup_in(stack, "/".join(walked))
        return entry, stack

    def lookup(self, path: str) -> Entry | None:
        return self.resolve(path)[0]

    def lower_positive(self, path: str) -> bool:
        """Does a lower layer under the parent still show ``path``? Then removing it needs a whiteout."""
        _, stack = self.resolve(parent_of(path))
        for index in stack:
            if index != UPPER and path in self.layers[index]:
                return self.layers[index][path] is not WHITEOUT
        return False

    def children(self, path: str) -> list[str]:
        """Names in the merged directory ``path``, whiteouts filtered, as readdir shows them."""
        _, stack = self.resolve(path)
        prefix = path + "/" if path else ""
        names = {key for i in stack for key in self.layers[i]
                 if key.startswith(prefix) and "/" not in key[len(prefix):]}
        return sorted(key[len(prefix):] for key in names if self._lookup_in(stack, key)[0] is not None)

    def merged(self) -> dict[str, Entry]:
        """The container's view: every visible path, directories without layer markers."""
        view, pending = {}, [""]
        while pending:
            directory = pending.pop()
            for name in self.children(directory):
                path = f"{directory}/{name}" if directory else name
                entry = self.lookup(path)
                view[path] = Dir() if isinstance(entry, Dir) else entry
                if isinstance(entry, Dir):
                    pending.append(path)
        return dict(sorted(view.items()))

    def source(self, path: str) -> list[int]:
        """The layers ``path`` comes from (several for a merged directory): 0 is upper, i is lowers[i-1]."""
        return self.resolve(path)[1]

    # --- copy-up -----------------------------------------------------------------------------------------

    def copy_up(self, path: str) -> None:
        """Give ``path`` and its parents a copy in the upper layer (directories copy up without opacity)."""
        parts = path.split("/") if path else []
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if prefix not in self.upper:
                entry = self.lookup(prefix)
                self.upper[prefix] = Dir() if isinstance(entry, Dir) else entry

    def _remove(self, path: str) -> None:
        """Drop ``path`` (and what the upper layer holds below it); leave a whiteout if a lower has it."""
        needs_whiteout = self.lower_positive(path)
        self._drop_upper_tree(path)
        if needs_whiteout:
            self.upper[path] = WHITEOUT

    def _drop_upper_tree(self, path: str) -> dict[str, Entry]:
        tree = {key: entry for key, entry in self.upper.items()
                if key == path or key.startswith(path + "/")}
        for key in tree:
            del self.upper[key]
        return tree

    # --- operations, as the system calls a container makes ----------------------------------------------

    def create(self, path: str, data: bytes = b"") -> None:
        """open(O_CREAT|O_EXCL) then write: a new file in the upper layer (over a whiteout, if any)."""
        if self.lookup(path) is not None:
            _fail(errno.EEXIST, path)
        self.copy_up(parent_of(path))
        self.upper[path] = File(data)

    def write(self, path: str, data: bytes) -> None:
        """open(O_WRONLY|O_APPEND) then write: the first write copies the whole file up."""
        entry = self.lookup(path)
        if entry is None:
            _fail(errno.ENOENT, path)
        if isinstance(entry, Dir):
            _fail(errno.EISDIR, path)
        self.copy_up(path)
        self.upper[path] = File(self.upper[path].data + data)

    def unlink(self, path: str) -> None:
        entry = self.lookup(path)
        if entry is None:
            _fail(errno.ENOENT, path)
        if isinstance(entry, Dir):
            _fail(errno.EISDIR, path)
        self.copy_up(parent_of(path))
        self._remove(path)

    def mkdir(self, path: str) -> None:
        if self.lookup(path) is not None:
            _fail(errno.EEXIST, path)
        self.copy_up(parent_of(path))
        # Over a whiteout the new directory must hide the deleted one's files: it is made opaque.
        self.upper[path] = Dir(opaque=self.upper.get(path) is WHITEOUT)

    def rmdir(self, path: str) -> None:
        entry = self.lookup(path)
        if entry is None:
            _fail(errno.ENOENT, path)
        if not isinstance(entry, Dir):
            _fail(errno.ENOTDIR, path)
        if self.children(path):
            _fail(errno.ENOTEMPTY, path)
        self.copy_up(parent_of(path))
        self._remove(path)

    def rename(self, old: str, new: str) -> None:
        """rename(2), with the checks in the order the VFS and then ovl_rename make them."""
        source = self._check_rename(old, new)
        if old == new:
            return                                      # same inode: rename(2) does nothing
        moving_dir = isinstance(source, Dir)
        needs_whiteout = self.lower_positive(old)
        self.copy_up(old)
        self.copy_up(parent_of(new))
        _, parent_stack = self.resolve(parent_of(new))
        merged_parent = len(parent_stack) > 1
        tree = self._drop_upper_tree(old)
        self._drop_upper_tree(new)                      # an empty target: only whiteouts may be left in it
        for key, entry in tree.items():
            self.upper[new + key[len(old):]] = entry
        if moving_dir:
            self.upper[new] = Dir(opaque=tree[old].opaque or merged_parent)
        if needs_whiteout:
            self.upper[old] = WHITEOUT

    def _check_rename(self, old: str, new: str) -> Entry:
        for path in (old, new):                         # both parents are walked first, old then new
            parent = self.lookup(parent_of(path))
            if parent is None:
                _fail(errno.ENOENT, path)
            if not isinstance(parent, Dir):
                _fail(errno.ENOTDIR, path)
        source = self.lookup(old)
        if source is None:
            _fail(errno.ENOENT, old)
        if new.startswith(old + "/"):
            _fail(errno.EINVAL, new)                    # into itself
        if old.startswith(new + "/"):
            _fail(errno.ENOTEMPTY, new)                 # over its own ancestor
        if old == new:
            return source
        target = self.lookup(new)
        if target is not None and isinstance(source, Dir) != isinstance(target, Dir):
            _fail(errno.ENOTDIR if isinstance(source, Dir) else errno.EISDIR, new)
        if isinstance(source, Dir) and self.source(old) != [UPPER]:
            _fail(errno.EXDEV, old)                     # a lower directory would need redirect_dir=on
        if isinstance(target, Dir) and self.children(new):
            _fail(errno.ENOTEMPTY, new)
        return source

    def apply(self, op: tuple) -> int:
        """Run one operation tuple, e.g. ("rename", "a", "b"); return 0 or the errno it failed with."""
        name, *args = op
        try:
            getattr(self, OPERATIONS[name])(*args)
        except OSError as err:
            return err.errno
        return 0


# The operation names of ``apply`` and the shell command each stands for.
OPERATIONS = {"create": "create", "write": "write", "delete": "unlink", "rename": "rename",
              "mkdir": "mkdir", "rmdir": "rmdir"}


def predict(lowers: list[Layer], ops: list[tuple]) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """What the kernel will show after ``ops`` on a fresh overlay of ``lowers``: (merged view, upperdir)."""
    model = Model(lowers)
    for op in ops:
        model.apply(op)
    return model.merged(), dict(sorted(model.upper.items()))
