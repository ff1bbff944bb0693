"""LABCORE_HOME may be called anything: --rm, rm, labd's DELETE and cleanup recognise the lab's objects by
where the lab keeps them (below its state directory), not by a "labcore" in the path's spelling."""
import os
import subprocess
import sys

from labcore.kernel.journal import Journal, undo_rmtree
from tests.conftest import privileged

pytestmark = privileged


def test_a_state_directory_without_the_prefix_in_its_name(tmp_path, shared_images, busybox_image, monkeypatch):
    home = tmp_path / "class" / "state"                  # no component starts with "labcore"
    home.mkdir(parents=True)
    os.symlink(shared_images, home / "images")
    monkeypatch.setenv("LABCORE_HOME", str(home))
    monkeypatch.delenv("LABCORE_HOST", raising=False)
    env = dict(os.environ)

    def labcore(*argv):
        done = subprocess.run([sys.executable, "-m", "labcore", *argv], capture_output=True, text=True,
                              env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    try:
        assert labcore("run", "--rm", "busybox", "echo", "hi") == "hi\n"
        box = labcore("run", "-d", "busybox", "sleep", "60").strip()
        assert labcore("rm", "-f", box).strip() == box
        kept = labcore("run", "-d", "busybox", "true").strip()
        assert "removed" in labcore("cleanup", "--all")
        assert not (home / "containers" / kept).exists()
        assert not any((home / "containers").iterdir())
        assert Journal(home / "journal").entries() == []
    finally:
        Journal(home / "journal").undo_all()
        for entry in os.listdir(home):
            if entry != "images":
                undo_rmtree(str(home / entry))
