"""The image verbs through labd (-H): images, tag, image inspect, save, rmi, load, commit and build act on the
daemon's image store, never on the caller's (issue 13 item 6: one image path, through the client)."""
import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from labcore.api.labd import Labd
from labcore.errors import NotFound
from labcore.image.baseimage import ensure_base_image
from labcore.image.oci import Store
from tests.conftest import privileged

pytestmark = privileged


@pytest.fixture
def daemon(tmp_path, labcore_home):
    """labd with a state directory (and image store) of its own, so what -H did is seen only there."""
    home = tmp_path / "labcore-daemon-home"
    ensure_base_image(Store(home / "images"))
    socket = f"/tmp/labcore-test-{os.getpid()}-{time.monotonic_ns()}.sock"     # unix(7): at most 108 bytes
    with Labd(socket, home=str(home)):
        yield f"unix://{socket}", Store(home / "images"), Store(labcore_home / "images")


def labcore(host, *argv, check=True):
    done = subprocess.run([sys.executable, "-m", "labcore", "-H", host, *argv], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_tag_inspect_save_rmi_load_go_to_the_daemons_store(daemon, tmp_path):
    host, theirs, ours = daemon
    busybox = theirs.resolve("busybox")
    assert busybox.short_id in labcore(host, "images", "-q", "busybox").stdout.split()
    labcore(host, "tag", "busybox", "labcore-h:v1")
    assert theirs.resolve("labcore-h:v1").id == busybox.id
    with pytest.raises(NotFound):
        ours.resolve("labcore-h:v1")
    [shown] = json.loads(labcore(host, "image", "inspect", "labcore-h:v1").stdout)
    assert shown["Id"] == busybox.id and "labcore-h:v1" in shown["RepoTags"]
    saved = tmp_path / "saved.tar"
    labcore(host, "save", "-o", str(saved), "labcore-h:v1")
    with tarfile.open(saved) as tar:
        assert json.loads(tar.extractfile("manifest.json").read())[0]["RepoTags"] == ["labcore-h:v1"]
    assert labcore(host, "rmi", "labcore-h:v1").stdout == "Untagged: labcore-h:v1\n"
    assert labcore(host, "load", "-i", str(saved)).stdout == "Loaded image: labcore-h:v1\n"
    assert theirs.resolve("labcore-h:v1").id == busybox.id
    assert labcore(host, "tag", "busybox", "UPPER:x", check=False).returncode == 125


def test_commit_and_build_happen_in_the_daemon(daemon, tmp_path):
    host, theirs, ours = daemon
    labcore(host, "run", "--name", "labcore-h-box", "--network", "none", "busybox", "sh", "-c", "echo made > /made")
    try:
        image_id = labcore(host, "commit", "labcore-h-box", "labcore-h:committed").stdout.strip()
    finally:
        labcore(host, "rm", "labcore-h-box")
    assert theirs.resolve("labcore-h:committed").id == image_id
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello").write_text("hello\n")
    (tmp_path / "Outside").write_text("FROM labcore-h:committed\nCOPY hello /hello\n")
    built = labcore(host, "build", "-f", str(tmp_path / "Outside"), "-t", "labcore-h:built", str(context)).stdout
    assert "Step 2/2 : COPY hello /hello" in built
    image = theirs.resolve("labcore-h:built")
    assert len(image.layers) == len(theirs.resolve(image_id).layers) + 1
    for name in ("labcore-h:committed", "labcore-h:built"):
        with pytest.raises(NotFound):
            ours.resolve(name)
