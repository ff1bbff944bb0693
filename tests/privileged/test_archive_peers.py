"""Images really made by Docker and Podman, loaded by the lab: same layer digests, same config, and an
unpacked tree equal to the tool's own `export` — a file added, a lower file deleted, a directory replaced.
And back: `labcore save` loads into podman and runs there, and skopeo reads it."""
import contextlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass

import pytest

from labcore import paths
from labcore.image import archive
from labcore.image.baseimage import ensure_base_image
from labcore.image.oci import Store
from labcore.kernel.journal import Scope
from labcore.lessons.dockerd import Dockerd, cgroup_parent_directories, dockerd_unavailable_reason, import_busybox
from labcore.runtime.container import Spec, run
from tests.conftest import has, privileged

REASON = dockerd_unavailable_reason()
pytestmark = [privileged, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
needs_podman = pytest.mark.skipif(not (has("podman") and has("runc") and has("skopeo")),
                                  reason="needs podman, runc and skopeo: apt-get install podman runc skopeo")

DOCKERFILE = """FROM docker.io/library/busybox:latest
RUN mkdir -p /data/old && echo lower > /data/old/gone.txt && echo x > /etc/removed.conf
RUN echo added > /added.txt && rm /etc/removed.conf
RUN rm -rf /data/old && mkdir /data/old && echo new > /data/old/new.txt
ENV LABCORE_TEST=1
CMD ["cat", "/added.txt"]
"""
# What each engine adds to a container's tree at creation (its "init layer"), not part of the image.
ENGINE_ADDED = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab", "dev/console",
                "dev/pts", "dev/shm", "run/.containerenv"}


@dataclass
class Built:
    archive: str
    diff_ids: list
    config: dict
    exported: set       # every path in `export` of a container created from the image


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One LABCORE_HOME for the module's engines (each test still gets its own store for loading)."""
    with pytest.MonkeyPatch.context() as patch:
        directory = tmp_path_factory.mktemp("labcore-peers")
        patch.setenv("LABCORE_HOME", str(directory))
        yield directory


@pytest.fixture(scope="module")
def context(home):
    (home / "context").mkdir()
    (home / "context" / "Dockerfile").write_text(DOCKERFILE)
    return str(home / "context")


@pytest.fixture(scope="module")
def docker(home):
    with Dockerd() as daemon:
        import_busybox(daemon, Store(home / "images"))
        yield daemon


@pytest.fixture(scope="module")
def docker_built(docker, context, home) -> Built:
    docker.cli("build", "-q", "-t", "labcore-peer:v1", context)
    docker.cli("save", "-o", str(home / "docker.tar"), "labcore-peer:v1")
    shown = json.loads(docker.cli("image", "inspect", "labcore-peer:v1").stdout)[0]
    container = docker.cli("create", "--network", "none", "labcore-peer:v1").stdout.strip()
    exported = tar_names(docker.cli("export", container, text=False).stdout)
    docker.cli("rm", container)
    return Built(str(home / "docker.tar"), shown["RootFS"]["Layers"], shown["Config"], exported)


class Podman:
    """podman with all of its state in labcore- directories: storage, run root, runc's state, networks."""

    def __init__(self, scope: Scope):
        paths.scratch_dir().mkdir(parents=True, exist_ok=True)
        self.data = tempfile.mkdtemp(prefix="labcore-podman-", dir=paths.scratch_dir())
        scope.record("directory", self.data, "rmtree", path=self.data)
        self.run_root = f"/run/{os.path.basename(self.data)}"        # conmon's sockets: keep paths short
        os.mkdir(self.run_root, 0o700)
        scope.record("directory", self.run_root, "rmtree", path=self.run_root)
        self.cgroup = os.path.basename(self.data)

    def __call__(self, *args: str, text: bool = True) -> subprocess.CompletedProcess:
        # crun refuses cgroup v1+v2 hybrids, so runc; cgroupfs and file events: no systemd or journald here.
        command = ["podman", "--root", f"{self.data}/storage", "--runroot", f"{self.run_root}/storage",
                   "--tmpdir", f"{self.run_root}/tmp", "--network-config-dir", f"{self.data}/networks",
                   "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                   "--runtime", "runc", "--runtime-flag", f"root={self.run_root}/runc", *args]
        return subprocess.run(command, capture_output=True, text=text, check=True)

    def run(self, image: str, *command: str) -> str:
        # This sandbox lacks CAP_SYS_RESOURCE, so no rlimit above the caller's may be set: podman's own
        # defaults (1048576 open files) are refused by the kernel; ask for small ones.
        return self("run", "--rm", "--network", "none", "--cgroup-parent", self.cgroup, "--ulimit",
                    "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image, *command).stdout

    def remove_everything(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self("rm", "--all", "--force")
            self("rmi", "--all", "--force")
        for top in {path for path in cgroup_parent_directories(self.cgroup)} | set(
                os.path.join(point, self.cgroup) for point in cgroup_mount_points()):
            for directory, _, _ in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)         # cgroups: deepest first, as rmdir(2) requires


@pytest.fixture(scope="module")
def podman(home, busybox_tar):
    compiled_in = ["/run/containers/networks", "/run/containers", "/run/runc"]
    existed = [path for path in compiled_in if os.path.exists(path)]
    with Scope() as scope:
        engine = Podman(scope)
        try:
            engine("load", "-i", busybox_tar)
            yield engine
        finally:
            engine.remove_everything()
            for path in compiled_in:             # compiled-in defaults (netavark, runc): rmdir if empty
                if path not in existed:
                    with contextlib.suppress(OSError):
                        os.rmdir(path)


@pytest.fixture(scope="module")
def busybox_tar(home):
    store = Store(home / "images")
    ensure_base_image(store)
    archive.save(["busybox"], str(home / "busybox.tar"), store)
    return str(home / "busybox.tar")


@pytest.fixture(scope="module")
def podman_built(podman, context, home) -> Built:
    podman("build", "--network", "none", "--cgroup-parent", podman.cgroup, "--runtime-flag",
           f"root={podman.run_root}/runc", "-t", "labcore-peer:v1", context)
    podman("save", "--format", "oci-archive", "-o", str(home / "podman.tar"), "localhost/labcore-peer:v1")
    shown = json.loads(podman("image", "inspect", "localhost/labcore-peer:v1").stdout)[0]
    container = podman("create", "--network", "none", "localhost/labcore-peer:v1").stdout.strip()
    exported = tar_names(podman("export", container, text=False).stdout)
    podman("rm", container)
    return Built(str(home / "podman.tar"), shown["RootFS"]["Layers"], shown["Config"], exported)


def tar_names(data: bytes) -> set:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {name for name in (m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()) if name}


def tree(root) -> set:
    found = set()
    for directory, dirs, files in os.walk(root):
        found.update(os.path.relpath(os.path.join(directory, name), root) for name in dirs + files)
    return found


def cgroup_mount_points() -> list:
    lines = open("/proc/self/mountinfo").read().splitlines()
    return [line.split()[4] for line in lines if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")]


def check_loaded(built: Built, expected_ref: str, tmp_path):
    store = Store(tmp_path / "labcore-store")
    assert archive.load(built.archive, store) == [f"Loaded image: {expected_ref}"]
    image = store.resolve(expected_ref)
    assert [layer.diff_id for layer in image.layers] == built.diff_ids      # the tool's own RootFS.Layers
    assert image.config["Cmd"] == built.config["Cmd"] == ["cat", "/added.txt"]
    assert image.config["Env"] == built.config["Env"] and "LABCORE_TEST=1" in image.config["Env"]
    for layer in image.layers:
        store.verify_blob(layer.digest)                                     # stored as-is, under its digest
    rootfs = tmp_path / "labcore-rootfs"
    store.unpack(image, rootfs)
    unpacked = tree(rootfs)
    assert unpacked - built.exported == set()
    assert built.exported - unpacked <= ENGINE_ADDED
    assert "added.txt" in unpacked and "etc/removed.conf" not in unpacked   # added; deleted from below
    assert os.listdir(rootfs / "data" / "old") == ["new.txt"]               # replaced: only the new file
    return store, image


def test_an_image_docker_built_loads_as_docker_sees_it(docker_built, tmp_path):
    check_loaded(docker_built, "labcore-peer:v1", tmp_path)


@needs_podman
def test_an_image_podman_built_loads_as_podman_sees_it(podman_built, tmp_path):
    check_loaded(podman_built, "localhost/labcore-peer:v1", tmp_path)


@needs_podman
def test_labcore_save_loads_and_runs_in_podman_and_skopeo_reads_it(docker_built, podman, tmp_path):
    store, image = check_loaded(docker_built, "labcore-peer:v1", tmp_path)
    saved = str(tmp_path / "saved.tar")
    archive.save(["labcore-peer:v1"], saved, store)
    seen = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{saved}"], capture_output=True,
                                     text=True, check=True).stdout)
    assert seen["Digest"] == image.digest and seen["Layers"] == [layer.digest for layer in image.layers]
    assert "Loaded image: docker.io/library/labcore-peer:v1" in podman("load", "-i", saved).stdout
    assert podman.run("docker.io/library/labcore-peer:v1") == "added\n"       # the image's own CMD
    assert podman.run("docker.io/library/labcore-peer:v1", "ls", "/data/old") == "new.txt\n"


def test_labcore_save_loads_into_docker_with_the_same_id(docker_built, docker, tmp_path):
    store, image = check_loaded(docker_built, "labcore-peer:v1", tmp_path)
    archive.save(["labcore-peer:v1"], str(tmp_path / "saved.tar"), store)
    docker.cli("tag", "labcore-peer:v1", "labcore-peer:before")
    docker.cli("rmi", "labcore-peer:v1")
    docker.cli("load", "-i", str(tmp_path / "saved.tar"))
    assert docker.cli("image", "inspect", "--format", "{{.Id}}", "labcore-peer:v1").stdout.strip() == image.id


# The image's CMD; a file of the replaced directory; whether the file deleted in a later layer is gone.
COMMANDS = [(), ("ls", "/data/old"), ("sh", "-c", "test -e /etc/removed.conf; echo $?")]


def outputs_under_labcore(built: Built, ref: str) -> list[str]:
    """Load the tool's archive into the store `labcore run` uses, run each command, then untag it again."""
    store = Store()
    archive.load(built.archive, store)
    try:
        return [run(Spec(ref, list(command) or None, rm=True, network="none")).stdout.decode()
                for command in COMMANDS]
    finally:
        name, _, tag = ref.rpartition(":")
        store.untag(name, tag)


def test_a_docker_built_image_runs_under_labcore_with_dockers_output(docker_built, docker):
    expected = [docker.run("labcore-peer:v1", *command) for command in COMMANDS]
    assert expected == ["added\n", "new.txt\n", "1\n"]
    assert outputs_under_labcore(docker_built, "labcore-peer:v1") == expected


@needs_podman
def test_a_podman_built_image_runs_under_labcore_with_podmans_output(podman_built, podman):
    expected = [podman.run("localhost/labcore-peer:v1", *command) for command in COMMANDS]
    assert expected == ["added\n", "new.txt\n", "1\n"]
    assert outputs_under_labcore(podman_built, "localhost/labcore-peer:v1") == expected
