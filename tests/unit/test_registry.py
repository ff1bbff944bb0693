"""Image references, platform choice and digest checks of the registry client."""
import hashlib

import pytest

from labcore.errors import BadInput, LabError, NotFound
from labcore.image import registry


@pytest.mark.parametrize("text,expected", [
    ("busybox", ("registry-1.docker.io", "library/busybox", "latest", "busybox")),
    ("busybox:1.36", ("registry-1.docker.io", "library/busybox", "1.36", "busybox")),
    ("localhost:5000/lab/hello:v1", ("localhost:5000", "lab/hello", "v1", "localhost:5000/lab/hello")),
    ("127.0.0.1:5000/hello", ("127.0.0.1:5000", "hello", "latest", "127.0.0.1:5000/hello")),
    ("quay.io/podman/hello", ("quay.io", "podman/hello", "latest", "quay.io/podman/hello")),
])
def test_references_split_as_docker_does(text, expected):
    ref = registry.parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.name) == expected


@pytest.mark.parametrize("text", ["", "UPPER", "a::b", "x@sha256:123", "-lead"])
def test_bad_references_are_refused_with_the_accepted_form(text):
    with pytest.raises(BadInput, match="REGISTRY/"):
        registry.parse_reference(text)


def test_plain_http_only_on_loopback():
    assert registry.is_loopback("127.0.0.1:5000") and registry.is_loopback("localhost:5000")
    assert not registry.is_loopback("quay.io") and not registry.is_loopback("10.0.0.1:5000")


def test_choose_linux_amd64_from_an_index():
    index = {"manifests": [
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert registry.choose_platform(index) == "sha256:amd"
    with pytest.raises(NotFound):
        registry.choose_platform({"manifests": index["manifests"][:1]})


def test_digest_mismatch_is_an_error():
    data = b"layer"
    assert registry.verify(data, "sha256:" + hashlib.sha256(data).hexdigest()) == data
    with pytest.raises(LabError, match="digest mismatch"):
        registry.verify(b"other", "sha256:" + hashlib.sha256(data).hexdigest())
