"""The image store: OCI layout files as the spec says, stable digests, resolve, corruption found, and
unpacking that applies whiteouts and refuses hostile layers, writing nothing outside its destination."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from labcore.cli import main
from labcore.errors import BadInput, LabError, NotFound, NotSupportedHere
from labcore.image import baseimage, oci
from labcore.image.oci import Store
from labcore.units import human_duration, human_size

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "labcore-store")


@pytest.fixture
def built(store):
    return baseimage.build(store)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(store, digest) -> bytes:
    return store.blob_path(digest).read_bytes()


# --- tiny layers, made with tarfile -----------------------------------------------------------------------

def entry(name, kind, mode, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


def file(name, data=b"x"):
    info = entry(name, tarfile.REGTYPE, 0o644)
    info.size = len(data)
    return info, data


def directory(name):
    return entry(name, tarfile.DIRTYPE, 0o755), None


def symlink(name, target):
    return entry(name, tarfile.SYMTYPE, 0o777, target), None


def hardlink(name, target):
    return entry(name, tarfile.LNKTYPE, 0o644, target), None


def make_layers(tmp_path, layers):
    """One tar file per list of (TarInfo, data): the layers, bottom first."""
    paths = []
    for number, entries in enumerate(layers):
        paths.append(tmp_path / f"layer-{number}.tar")
        with tarfile.open(paths[-1], "w", format=tarfile.GNU_FORMAT) as tar:
            for info, data in entries:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return paths


def make_outside(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(b"original")
    return outside


def snapshot(directory):
    """Every path below ``directory`` except the unpack destination, with file contents and modes."""
    return {str(p): (p.is_symlink(), p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink()
                     else None) for p in directory.rglob("*") if "labcore-rootfs" not in p.parts}


# --- the layout, against image-spec v1.1 ------------------------------------------------------------------

def test_layout_files_follow_the_image_spec(store, built):
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert (index["schemaVersion"], index["mediaType"]) == (2, oci.INDEX)
    [entry] = index["manifests"]
    assert entry["mediaType"] == oci.MANIFEST and entry["annotations"][oci.REF_NAME] == "latest"
    manifest = json.loads(blob(store, entry["digest"]))
    assert manifest["schemaVersion"] == 2 and manifest["config"]["mediaType"] == oci.CONFIG
    [layer] = manifest["layers"]
    assert layer["mediaType"] == oci.LAYER_GZIP
    config = json.loads(blob(store, manifest["config"]["digest"]))
    # diff_ids name the *uncompressed* tar; the layer's digest names the gzip bytes as stored.
    uncompressed = gzip.decompress(blob(store, layer["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(uncompressed)]}
    assert (config["os"], config["architecture"]) == ("linux", oci.host_architecture())
    assert config["config"]["Cmd"] == ["sh"] and "busybox-static" in config["history"][0]["created_by"]
    for descriptor in (entry, manifest["config"], layer):
        assert len(blob(store, descriptor["digest"])) == descriptor["size"]
    for path in (store.root / "blobs" / "sha256").iterdir():
        assert sha256(path.read_bytes()) == "sha256:" + path.name


def test_layer_tar_is_deterministic(store, built, tmp_path):
    again = baseimage.build(Store(tmp_path / "labcore-other"))
    assert (again.digest, again.id) == (built.digest, built.id)
    assert again.layers[0].digest == built.layers[0].digest
    with tarfile.open(built.layers[0].path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, members[0].mtime)}
        assert not tar.pax_headers and not any(m.pax_headers for m in members)
    assert built.layers[0].path.read_bytes()[4:8] == b"\0\0\0\0"        # gzip MTIME field is zero


def test_a_missing_or_dynamic_busybox_is_refused_with_the_fix(store, tmp_path):
    with pytest.raises(NotSupportedHere, match="no busybox at") as caught:
        baseimage.build(store, binary=str(tmp_path / "busybox"))
    assert caught.value.fix == "apt-get install busybox-static"
    with pytest.raises(NotSupportedHere, match="dynamically linked"):
        baseimage.build(store, binary=sys.executable)       # needs libc and ld.so, which the image lacks
    assert not (store.root / "index.json").exists()


# --- resolving names --------------------------------------------------------------------------------------

REFS = {"name": lambda i: "busybox", "name:tag": lambda i: "busybox:latest",
        "Docker Hub name": lambda i: "docker.io/library/busybox:latest", "IMAGE ID": lambda i: i.short_id,
        "sha256: prefix": lambda i: i.id[:15], "whole id": lambda i: i.id,
        "manifest digest prefix": lambda i: i.digest[7:19]}


@pytest.mark.parametrize("kind", list(REFS))
def test_resolve_by_name_tag_and_id_prefix(busybox_image, kind):
    assert Store().resolve(REFS[kind](busybox_image)).id == busybox_image.id


def test_missing_image_uses_dockers_words(busybox_image):
    with pytest.raises(NotFound) as caught:
        Store().resolve("busybox:nope")
    assert caught.value.message == "No such image: busybox:nope" and "labcore images" in caught.value.fix
    with pytest.raises(NotFound, match="No such image: alpine:latest"):
        Store().resolve("alpine")
    with pytest.raises(BadInput, match="invalid reference format"):
        Store().resolve("Not A Name!")


def test_retag_replaces_the_index_entry(store, tmp_path):
    layer = make_layers(tmp_path, [[file("hello", b"one")]])[0]
    first = store.add_image([layer], {"Cmd": ["one"]}, "labcore-demo", "v1")
    second = store.add_image([layer], {"Cmd": ["two"]}, "labcore-demo", "v1")
    store.add_image([layer], {"Cmd": ["one"]}, "labcore-demo", "v2")
    assert first.id != second.id and store.resolve("labcore-demo:v1").config == {"Cmd": ["two"]}
    assert sorted(image.ref for image in store.list()) == ["labcore-demo:v1", "labcore-demo:v2"]


# --- corruption -------------------------------------------------------------------------------------------

def test_corrupted_layer_is_found_and_a_rebuild_repairs_it(store, built, tmp_path):
    path = built.layers[0].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LabError, match=f"blob {built.layers[0].digest} is corrupted") as caught:
        store.unpack(built, tmp_path / "labcore-rootfs")
    assert "ensure_base_image" in caught.value.fix
    assert baseimage.ensure_base_image(store).digest == built.digest
    assert sha256(path.read_bytes()) == built.layers[0].digest


def test_corrupted_config_is_found_on_resolve(store, built):
    store.blob_path(built.id).write_text('{"config": {"Cmd": ["rm", "-rf", "/"]}}')
    with pytest.raises(LabError, match=f"blob {built.id} is corrupted"):
        store.resolve("busybox")


# --- unpacking --------------------------------------------------------------------------------------------

def test_unpacked_busybox_is_a_root_filesystem(busybox_image, tmp_path):
    root = tmp_path / "labcore-rootfs"
    Store().unpack(busybox_image, root)
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.readlink(root / "usr/bin/[") == "../../bin/busybox"
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    listed = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True, text=True).stdout.split()
    assert all(os.path.lexists(root / name) for name in listed if "/" in name)
    # The applet links are relative, so the image's own busybox answers even from the host.
    shell = subprocess.run([root / "bin/sh", "-c", "echo $((6 * 7)) $0"], capture_output=True, text=True)
    assert shell.stdout.split() == ["42", str(root / "bin/sh")]


def test_whiteouts_delete_from_the_layers_below_only(store, tmp_path):
    lower = [file("etc/a"), file("etc/b"), file("d/x"), file("d/sub/y"), file("keep/k")]
    upper = [file("etc/.wh.a"), file("etc/c"), file("etc/.wh.c"), file("d/z"), file("d/.wh..wh..opq")]
    image = store.add_image(make_layers(tmp_path, [lower, upper]), {}, "labcore-whiteouts")
    root = tmp_path / "labcore-rootfs"
    store.unpack(image, root)
    assert sorted(os.listdir(root / "etc")) == ["b", "c"]      # c came with its whiteout: same layer, kept
    assert os.listdir(root / "d") == ["z"] and (root / "keep/k").exists()


def test_a_file_replaces_a_planted_symlink_instead_of_writing_through_it(store, tmp_path):
    outside = make_outside(tmp_path)
    layers = make_layers(tmp_path, [[symlink("f", f"{outside}/secret")], [file("f", b"pwned")]])
    store.unpack(store.add_image(layers, {}, "labcore-replace"), tmp_path / "labcore-rootfs")
    assert (tmp_path / "labcore-rootfs/f").read_bytes() == b"pwned"
    assert (outside / "secret").read_bytes() == b"original"


def hostile_layers(outside):
    o = str(outside)
    return {
        "absolute path": [[file(f"{o}/pwned")]],
        "../ traversal": [[file("../outside/pwned")]],
        ".. in the middle": [[directory("a"), file("a/../../outside/pwned")]],
        "symlink escape then write through it": [[symlink("link", o), file("link/pwned")]],
        "relative symlink escape": [[symlink("link", "../outside"), file("link/pwned")]],
        "symlink chain": [[symlink("a", "b"), symlink("b", "c"), symlink("c", "../outside"),
                           file("a/pwned")]],
        "symlink planted by an earlier layer": [[symlink("etc", o)], [file("etc/pwned")]],
        "directory through a symlink": [[symlink("link", o), directory("link/newdir")]],
        "hardlink to an absolute path": [[hardlink("hl", f"{o}/secret")]],
        "hardlink climbing out": [[hardlink("hl", "../outside/secret")]],
        "hardlink through a symlink": [[symlink("link", o), hardlink("hl", "link/secret")]],
        "whiteout of ..": [[directory("d"), file("d/.wh...")]],
        "whiteout climbing out": [[file("../outside/.wh.secret")]],
        "whiteout through a symlink": [[symlink("link", o)], [file("link/.wh.secret")]],
        "opaque whiteout through a symlink": [[symlink("link", o)], [file("link/.wh..wh..opq")]],
    }


@pytest.mark.parametrize("kind", list(hostile_layers("/x")))
def test_hostile_layers_are_refused_and_nothing_outside_is_written(store, tmp_path, kind):
    outside = make_outside(tmp_path)
    layers = hostile_layers(outside)[kind]
    image = store.add_image(make_layers(tmp_path, layers), {}, "labcore-hostile")
    before = snapshot(tmp_path)
    with pytest.raises(BadInput, match="refusing layer entry") as caught:
        store.unpack(image, tmp_path / "labcore-rootfs")
    assert caught.value.path in {info.name for layer in layers for info, _ in layer}
    assert snapshot(tmp_path) == before


# --- the CLI ----------------------------------------------------------------------------------------------

def test_images_prints_dockers_columns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABCORE_HOME", str(tmp_path / "labcore-own"))   # not the session's shared store
    busybox_image = baseimage.ensure_base_image()
    assert main(["images"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.startswith("REPOSITORY   TAG       IMAGE ID       CREATED") and header.endswith("SIZE")
    [row] = [r for r in rows if r.startswith("busybox ")]
    assert row.split()[:3] == ["busybox", "latest", busybox_image.short_id] and row.endswith("ago   1.03MB")
    assert main(["images", "-q", "busybox"]) == 0
    assert capsys.readouterr().out.split() == [busybox_image.short_id]
    assert main(["images", "--format", "json", "busybox:latest"]) == 0
    assert json.loads(capsys.readouterr().out)["Digest"] == busybox_image.digest


@pytest.mark.parametrize("seconds, words", [
    (0.4, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (90, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"), (200 * 86400, "6 months"), (1000 * 86400, "2 years")])
def test_human_duration_matches_go_units(seconds, words):
    assert human_duration(seconds) == words


def test_human_size_matches_go_units():
    assert [human_size(n) for n in (999, 1031802, 4261234, 1.5e9)] == ["999B", "1.03MB", "4.26MB", "1.5GB"]


# --- real OCI tools read the layout -----------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo (apt-get install skopeo)")
def test_skopeo_reads_the_layout_and_copies_every_blob(store, built, tmp_path):
    seen = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{store.root}:latest"], check=True,
                                     capture_output=True, text=True).stdout)
    assert (seen["Digest"], seen["Layers"], seen["Architecture"]) == (
        built.digest, [built.layers[0].digest], oci.host_architecture())
    # copy re-hashes every blob it reads: a digest that did not match would fail here.
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci:{store.root}:latest",
                    f"dir:{tmp_path / 'labcore-copy'}"], check=True, capture_output=True)
    assert json.loads((tmp_path / "labcore-copy/manifest.json").read_text())["config"]["digest"] == built.id


@pytest.mark.skipif(not shutil.which("umoci"), reason="needs umoci (apt-get install umoci)")
def test_umoci_lists_the_tag(store, built):
    listed = subprocess.run(["umoci", "ls", "--layout", str(store.root)], check=True,
                            capture_output=True, text=True).stdout
    assert listed.split() == ["latest"]


def test_prune_counts_only_the_bytes_of_images_it_deleted(monkeypatch):
    from types import SimpleNamespace

    from labcore.errors import LabError
    from labcore.runtime import images as runtime_images
    gone = SimpleNamespace(id="sha256:aa", name="<none>", size=100)
    stuck = SimpleNamespace(id="sha256:bb", name="<none>", size=7000)
    store = SimpleNamespace(list=lambda: [gone, stuck])

    def delete(store, image, named):
        if image is stuck:
            raise LabError("a layer is busy")
        return [f"Deleted: {image.id}"]

    monkeypatch.setattr(runtime_images, "delete", delete)
    assert runtime_images.prune(store, used=set()) == (["Deleted: sha256:aa"], 100)
