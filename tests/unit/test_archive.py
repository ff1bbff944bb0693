"""Image archives and the image verbs, on small archives built here with tarfile: docker save's two layouts,
an OCI layout, hostile member names, `Loaded image:` lines, save → load, tag, rmi and its blob collection."""
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from labcore.cli import main
from labcore.errors import BadInput, LabError
from labcore.image import archive
from labcore.image.oci import Store
from labcore.runtime.images import remove


@pytest.fixture
def own_images(labcore_home):
    """A store of this test's own, instead of the session's shared one: these tests delete images."""
    (labcore_home / "images").unlink()
    return Store()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(files: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def config(layers: list[bytes], cmd=("sh",)) -> bytes:
    """An image config whose diff_ids are the layers' uncompressed digests (config.md)."""
    plain = [gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data for data in layers]
    return json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                       "config": {"Cmd": list(cmd), "Env": ["PATH=/bin"]},
                       "rootfs": {"type": "layers", "diff_ids": [sha256(data) for data in plain]}}).encode()


def write_tar(path, members: dict) -> str:
    """members: name -> bytes (a file), or ("symlink"|"hardlink", target)."""
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return str(path)


def docker_legacy(path, tags=("demo:v1",)) -> tuple[str, bytes, list[bytes]]:
    """What Docker 20.10's `docker save` writes: <v1 id>/layer.tar, <config hex>.json, manifest.json."""
    layers = [layer({"etc/base": b"base\n"}), layer({"added.txt": b"added\n", "etc/.wh.base": b""})]
    blob = config(layers)
    members = {f"{sha256(blob)[7:]}.json": blob}
    for number, data in enumerate(layers):
        members[f"{number:064x}/layer.tar"] = data
    members["manifest.json"] = json.dumps([{"Config": f"{sha256(blob)[7:]}.json", "RepoTags": list(tags),
                                            "Layers": [f"{n:064x}/layer.tar" for n in range(len(layers))]}]).encode()
    return write_tar(path, members), blob, layers


def oci_members(layers: list[bytes], annotations: dict, docker_manifest: bool = False) -> tuple[dict, bytes]:
    """An OCI image layout as tar members (what podman and Docker 25+ write); the manifest's bytes."""
    blob = config(layers)
    descriptors = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(data),
                    "size": len(data)} for data in layers]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(blob), "size": len(blob)},
                           "layers": descriptors}).encode()
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
               "index.json": json.dumps({"schemaVersion": 2, "manifests": [{
                   "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(manifest),
                   "size": len(manifest), "annotations": annotations}]}).encode()}
    for data in [blob, manifest, *layers]:
        members[f"blobs/sha256/{sha256(data)[7:]}"] = data
    if docker_manifest:                         # Docker 25+: the same blobs listed by manifest.json too
        members["manifest.json"] = json.dumps([{"Config": f"blobs/sha256/{sha256(blob)[7:]}",
                                                "RepoTags": ["ignored:when-index-json-is-there"],
                                                "Layers": [f"blobs/sha256/{sha256(d)[7:]}" for d in layers]}]).encode()
    return members, manifest


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# --- load -------------------------------------------------------------------------------------------------

def test_docker_save_legacy_layout_loads_with_dockers_image_id(tmp_path, own_images):
    path, blob, layers = docker_legacy(tmp_path / "demo.tar", tags=("demo:v1", "docker.io/library/demo:v2"))
    assert archive.load(path, own_images) == ["Loaded image: demo:v1", "Loaded image: demo:v2"]
    image = own_images.resolve("demo:v1")
    assert image.id == sha256(blob)                         # the config bytes kept: Docker's IMAGE ID
    assert [layer.digest for layer in image.layers] == [sha256(data) for data in layers]   # stored as-is
    assert image.config["Cmd"] == ["sh"]
    own_images.unpack(image, tmp_path / "labcore-rootfs")
    assert sorted(os.listdir(tmp_path / "labcore-rootfs")) == ["added.txt", "etc"]
    assert os.listdir(tmp_path / "labcore-rootfs" / "etc") == []          # the whiteout deleted etc/base


def test_docker_25_layout_keeps_the_oci_manifest_and_its_names(tmp_path, own_images):
    layers = [gz(layer({"hello": b"hi\n"}))]
    members, manifest = oci_members(layers, {"io.containerd.image.name": "docker.io/library/hello:1",
                                             "org.opencontainers.image.ref.name": "1"}, docker_manifest=True)
    assert archive.load(write_tar(tmp_path / "d25.tar", members), own_images) == ["Loaded image: hello:1"]
    image = own_images.resolve("hello:1")
    assert image.digest == sha256(manifest) and image.layers[0].media_type.endswith("+gzip")


def test_oci_layout_directory_and_untagged_image(tmp_path, own_images):
    members, _ = oci_members([layer({"a": b"a"})], {"org.opencontainers.image.ref.name": "latest"})
    directory = tmp_path / "layout"
    for name, data in members.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    [line] = archive.load(str(directory), own_images)
    blob = config([layer({"a": b"a"})])
    assert line == f"Loaded image ID: {sha256(blob)}"    # a bare ref.name names no repository
    assert [image.ref for image in own_images.list()] == ["<none>:<none>"]


def test_a_layer_repeated_by_symlink_is_read_through_it(tmp_path, own_images):
    data = layer({"same": b"same"})
    blob = config([data, data])
    path = write_tar(tmp_path / "linked.tar", {
        "a" * 64 + "/layer.tar": data, "b" * 64 + "/layer.tar": ("symlink", "../" + "a" * 64 + "/layer.tar"),
        f"{sha256(blob)[7:]}.json": blob,
        "manifest.json": json.dumps([{"Config": f"{sha256(blob)[7:]}.json", "RepoTags": ["twice:latest"],
                                      "Layers": ["a" * 64 + "/layer.tar", "b" * 64 + "/layer.tar"]}]).encode()})
    assert archive.load(path, own_images) == ["Loaded image: twice:latest"]


@pytest.mark.parametrize("hostile", [
    {"../escaped": b"x"},
    {"/tmp/labcore-absolute": b"x"},
    {"manifest.json": ("symlink", "../../../etc/passwd")},
    {"evil": ("hardlink", "../outside")},
])
def test_hostile_member_names_are_refused_naming_the_entry(tmp_path, own_images, labcore_home, hostile):
    path = write_tar(tmp_path / "hostile.tar", hostile)
    with pytest.raises(BadInput, match="refusing archive entry") as caught:
        archive.load(path, own_images)
    assert caught.value.path == next(iter(hostile))
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/labcore-absolute")
    assert os.listdir(labcore_home / "tmp") == []          # the labcore-load- directory is gone too


def test_a_layer_that_is_not_the_one_the_config_names_is_refused(tmp_path, own_images):
    path, blob, layers = docker_legacy(tmp_path / "demo.tar")
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members[f"{1:064x}/layer.tar"] = layer({"added.txt": b"tampered\n"})
    with pytest.raises(LabError, match="but the config says"):
        archive.load(write_tar(tmp_path / "tampered.tar", members), own_images)
    assert own_images.list() == []


def test_a_blob_whose_name_is_not_its_hash_is_refused(tmp_path, own_images):
    members, _ = oci_members([layer({"a": b"a"})], {"io.containerd.image.name": "x:1"})
    name = next(n for n, data in members.items() if data == layer({"a": b"a"}))
    members[name] = layer({"a": b"b"})
    with pytest.raises(LabError, match="hashes to"):
        archive.load(write_tar(tmp_path / "bad.tar", members), own_images)


def test_not_an_archive_names_the_accepted_forms(tmp_path, own_images):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInput, match="not a tar archive") as caught:
        archive.load(str(tmp_path / "notes.txt"), own_images)
    assert "docker save" in caught.value.fix and "oci-archive" in caught.value.fix


# --- save, and the verbs ------------------------------------------------------------------------------------

def test_save_then_load_gives_the_same_image(tmp_path, own_images):
    archive.load(docker_legacy(tmp_path / "demo.tar")[0], own_images)
    original = own_images.resolve("demo:v1")
    archive.save(["demo:v1"], str(tmp_path / "saved.tar"), own_images)
    with tarfile.open(tmp_path / "saved.tar") as tar:
        index = json.loads(tar.extractfile("index.json").read())
        docker = json.loads(tar.extractfile("manifest.json").read())
    assert index["manifests"][0]["annotations"] == {"io.containerd.image.name": "docker.io/library/demo:v1",
                                                    "org.opencontainers.image.ref.name": "v1"}
    assert docker[0]["RepoTags"] == ["demo:v1"]
    other = Store(tmp_path / "labcore-other")
    assert archive.load(str(tmp_path / "saved.tar"), other) == ["Loaded image: demo:v1"]
    copy = other.resolve("demo:v1")
    assert (copy.id, copy.digest) == (original.id, original.digest)


def test_cli_load_tag_inspect_rmi(tmp_path, own_images, capsys):
    path, blob, _ = docker_legacy(tmp_path / "demo.tar")
    assert main(["load", "-i", path]) == 0
    assert main(["tag", "demo:v1", "other"]) == 0
    assert capsys.readouterr().out == "Loaded image: demo:v1\n"
    main(["image", "inspect", "other"])
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["Id"] == sha256(blob) and shown["RepoTags"] == ["demo:v1", "other:latest"]
    assert shown["RootFS"]["Type"] == "layers" and len(shown["RootFS"]["Layers"]) == 2
    assert main(["rmi", "other"]) == 0
    assert capsys.readouterr().out == "Untagged: other:latest\n"      # another name is left: only untagged


def test_tag_refuses_an_uppercase_name_before_changing_anything(own_images, capsys):
    assert main(["tag", "busybox", "UPPER:tag"]) == 125
    error = capsys.readouterr().err
    assert "repository name (UPPER) must be lowercase" in error and "fix:" in error


def test_rmi_deletes_only_blobs_no_other_image_uses(tmp_path, own_images):
    base = layer({"base": b"shared"})
    first = own_images.add_image([write_layer(tmp_path, "0", base), write_layer(tmp_path, "1", layer({"a": b"1"}))],
                                 {"Cmd": ["one"]}, "first")
    second = own_images.add_image([write_layer(tmp_path, "0", base)], {"Cmd": ["two"]}, "second")
    lines = remove(own_images, "first")
    assert lines == ["Untagged: first:latest", f"Deleted: {first.id}", f"Deleted: {first.layers[1].digest}"]
    assert not own_images.blob_path(first.digest).exists()                 # its manifest went too
    assert own_images.blob_path(second.layers[0].digest).exists()         # the shared layer stays
    remove(own_images, second.short_id)
    assert os.listdir(own_images.root / "blobs" / "sha256") == []


def test_rmi_by_id_with_two_names_and_an_image_in_use_are_refused(tmp_path, own_images, labcore_home):
    image = own_images.add_image([write_layer(tmp_path, "0", layer({"a": b"a"}))], {}, "used")
    own_images.point(own_images.descriptor(image), "alias", "v1")
    with pytest.raises(LabError, match="referenced in multiple repositories"):
        remove(own_images, image.short_id)
    remove(own_images, "alias:v1")
    (labcore_home / "containers" / "c0ffee").mkdir(parents=True)
    (labcore_home / "containers" / "c0ffee" / "state.json").write_text(json.dumps({"image": "used"}))
    with pytest.raises(LabError, match="container c0ffee is using"):
        remove(own_images, "used")
    blobs = sorted(os.listdir(own_images.root / "blobs" / "sha256"))
    assert remove(own_images, "used", force=True) == ["Untagged: used:latest"]     # Docker: only untagged
    assert sorted(os.listdir(own_images.root / "blobs" / "sha256")) == blobs       # the container's files stay
    assert [(i.name, i.id) for i in own_images.list()] == [("<none>", image.id)]
    (labcore_home / "containers" / "c0ffee" / "state.json").write_text(json.dumps(
        {"image": "gone", "config": {"image_id": image.id}}))                      # by ID, once the name is gone
    with pytest.raises(LabError, match="container c0ffee is using"):
        remove(own_images, image.short_id)


def write_layer(tmp_path, name: str, data: bytes):
    path = tmp_path / f"layer-{name}.tar"
    path.write_bytes(data)
    return path
