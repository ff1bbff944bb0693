"""The base image: busybox, built from the host's own busybox-static, with nothing downloaded.

`docker run busybox` starts from Docker Hub's busybox image: one static binary that is some 270 programs
(its "applets", chosen by the name it is started as, argv[0]) and a few files in /etc. The lab builds the
same thing from Debian's busybox-static:

    bin/busybox                the binary, copied from /bin/busybox; static, so the image needs no libc
    bin/sh -> busybox, ...     one symlink per applet, where `busybox --list-full` says it lives
    etc/passwd, etc/group      root and nobody, so `id` and `ls -l` have names to show
    proc sys dev tmp run ...   empty directories: the runtime mounts onto them

The layer is written byte for byte the same every time — entries sorted, every date the binary's own
mtime, owner 0, plain ustar headers, gzip without a timestamp — so the same busybox always gives the same
digests. An image ID is a content hash: rebuilding changes nothing.

Next: ``labcore.image.oci`` stores and unpacks it; ``labcore.kernel.rootfs`` makes it a container's root.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import struct
import subprocess
import tarfile
from datetime import datetime, timezone

from labcore.errors import LabError, NotSupportedHere
from labcore.image.oci import BASE_IMAGE, LAYER_GZIP, Image, Store, host_architecture

HOST_BUSYBOX = "/bin/busybox"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"      # Docker Hub busybox's Env
DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
               "run": 0o755, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
               "usr/sbin": 0o755, "var": 0o755}
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"


def ensure_base_image(store: Store | None = None) -> Image:
    """busybox:latest, built from the host's busybox-static the first time (fast when it is there)."""
    store = store or Store()
    try:
        image = store.resolve(BASE_IMAGE)
        for layer in image.layers:
            store.verify_blob(layer.digest)
        return image
    except LabError:            # missing, or a blob damaged: a build writes the very same bytes again
        return build(store)


def build(store: Store | None = None, binary: str = HOST_BUSYBOX) -> Image:
    """Build busybox:latest into ``store`` from the host's busybox; the same binary gives the same digests."""
    store = store or Store()
    find_static_busybox(binary)
    version = busybox_version(binary)
    # One date for everything (like SOURCE_DATE_EPOCH): when Debian built the binary, not when we ran.
    date = int(os.stat(binary).st_mtime)
    layer = store.write_blob(gzip.compress(layer_tar(binary, date), compresslevel=9, mtime=0), LAYER_GZIP)
    config = image_config(version, date)
    return store.add_image([store.blob_path(layer["digest"])], config, "busybox", "latest")


def find_static_busybox(binary: str) -> None:
    """Refuse a missing or dynamically linked busybox: inside the image there is no libc to load."""
    try:
        with open(binary, "rb") as file:
            head = file.read(4096)
    except FileNotFoundError as err:
        raise NotSupportedHere(f"no busybox at {binary}: the base image is built from it", path=binary,
                               fix="apt-get install busybox-static") from err
    if has_interpreter(head):
        raise NotSupportedHere(f"{binary} is dynamically linked; an image with only it could not start it",
                               path=binary, fix="apt-get install busybox-static (it replaces busybox)")


def has_interpreter(elf: bytes) -> bool:
    """True when a 64-bit ELF has a PT_INTERP program header: a dynamic loader must run it (elf(5))."""
    if elf[:5] != b"\x7fELF\x02":
        return False
    offset, = struct.unpack_from("<Q", elf, 0x20)                       # e_phoff
    size, count = struct.unpack_from("<HH", elf, 0x36)                  # e_phentsize, e_phnum
    headers = range(offset, min(offset + size * count, len(elf) - 4), size)
    return any(struct.unpack_from("<I", elf, at)[0] == 3 for at in headers)    # 3 = PT_INTERP


def busybox_version(binary: str) -> str:
    """ "1.35.0" from the banner ``BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.``"""
    banner = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    match = re.search(r"BusyBox v(\S+)", banner)
    return match.group(1) if match else "unknown"


def applet_links(binary: str) -> dict[str, str]:
    """Applet path -> symlink target, relative so it resolves the same inside the container and when the
    unpacked tree is looked at from the host (usr/bin/[ -> ../../bin/busybox)."""
    listing = subprocess.run([binary, "--list-full"], capture_output=True, text=True, check=True).stdout
    links = {}
    for path in listing.split():
        # linuxrc is an initrd's init (a file in /), and bin/busybox is the binary itself.
        if "/" in path and path != "bin/busybox":
            links[path] = os.path.relpath("bin/busybox", os.path.dirname(path))
    return links


def layer_tar(binary: str, date: int) -> bytes:
    """The uncompressed layer: sorted entries (parents before children), each with the same date and owner."""
    directories = dict(DIRECTORIES)
    links = applet_links(binary)
    directories.update({os.path.dirname(p): 0o755 for p in links if os.path.dirname(p) not in directories})
    with open(binary, "rb") as file:
        files = {"bin/busybox": (0o755, file.read()), "etc/passwd": (0o644, PASSWD.encode()),
                 "etc/group": (0o644, GROUP.encode())}
    names = sorted([*directories, *links, *files])
    buffer = io.BytesIO()
    # ustar: fixed-size headers only. Python's default (pax) may add records, e.g. for long names.
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.mtime, info.uname, info.gname = date, "root", "root"
            data = None
            if name in directories:
                info.type, info.mode = tarfile.DIRTYPE, directories[name]
            elif name in links:
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, links[name]
            else:
                info.mode, data = files[name]
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def image_config(version: str, date: int) -> dict:
    """The config as Docker Hub's busybox has it: `sh` by default, the usual PATH, and two history lines."""
    created = datetime.fromtimestamp(date, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": {"Env": [PATH], "Cmd": ["sh"]},
        "history": [
            {"created": created, "created_by": f"labcore: busybox {version} from the host's busybox-static"},
            {"created": created, "created_by": 'CMD ["sh"]', "empty_layer": True},
        ],
    }
