"""Pulling from a real registry (Debian's docker-registry on loopback), with an image pushed by skopeo."""
import json
import subprocess

import pytest

from labcore.errors import NotFound
from labcore.image import registry
from labcore.image.baseimage import ensure_base_image
from labcore.image.oci import Store
from labcore.lessons.localregistry import LocalRegistry
from tests.conftest import has

pytestmark = pytest.mark.skipif(not (has("docker-registry") and has("skopeo")),
                                reason="needs docker-registry and skopeo: apt-get install docker-registry skopeo")


@pytest.fixture
def pushed(tmp_path):
    """A registry on loopback holding busybox as lab/busybox:v1, pushed by skopeo from an OCI layout."""
    source = Store(tmp_path / "labcore-source")
    image = ensure_base_image(source)
    with LocalRegistry() as server:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                        f"oci:{source.root}:latest", f"docker://{server.address}/lab/busybox:v1"],
                       check=True, capture_output=True)
        yield server, image


def test_pull_stores_the_same_image_with_verified_digests(pushed, tmp_path):
    server, original = pushed
    store = Store(tmp_path / "labcore-target")
    events = []
    image = registry.pull_image(f"{server.address}/lab/busybox:v1", store, events.append)
    assert image.id == original.id                         # the config digest survives the trip
    assert [layer.diff_id for layer in image.layers] == [layer.diff_id for layer in original.layers]
    assert store.resolve(f"{server.address}/lab/busybox:v1").id == original.id
    statuses = [event["status"] for event in events]
    assert statuses[0] == "Pulling from lab/busybox" and "Pull complete" in statuses
    assert statuses[-1] == f"Status: Downloaded newer image for {server.address}/lab/busybox:v1"
    assert all(json.dumps(event) for event in events)      # each event is what labd streams as JSON


def test_unknown_tag_is_not_found(pushed, tmp_path):
    server, _ = pushed
    with pytest.raises(NotFound, match="manifest unknown"):
        registry.pull_image(f"{server.address}/lab/busybox:nope", Store(tmp_path / "labcore-t"))
