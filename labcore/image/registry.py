"""Pulling an image: the OCI distribution API, spoken over plain HTTP.

When `docker run busybox` finds no image locally, the daemon pulls it. A registry is a web server with a
small, content-addressed API (OCI distribution-spec, "Pull"):

    GET /v2/                                   is this a registry? (401 here means: get a token first)
    GET /v2/<name>/manifests/<tag|digest>      the manifest: which config and which layers, by digest
    GET /v2/<name>/blobs/<digest>              a config or a layer, fetched by its sha256

A tag may name an *index* (a manifest list) with one manifest per platform; the client picks linux/amd64.
Every blob is checked against its digest while it downloads: the digest is the blob's name, so a registry
(or a proxy) cannot hand over different bytes without the client noticing.

``push`` is the other direction (blobs, then the manifest), for putting an image into a registry.
``pull`` yields progress events shaped exactly as Docker's daemon streams them from ``POST /images/create``
(``{"status": "Downloading", "progressDetail": {...}, "id": "<12 hex>"}``), so the lab's daemon forwards them
unchanged and the docker SDK and CLI render them as they would Docker's.

Plain HTTP is used only for loopback registries (as Docker allows for 127.0.0.0/8 without configuration).
Next: ``labcore.image.oci`` stores what was pulled; ``labcore.runtime.container`` runs it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator, Iterator

from labcore.errors import BadInput, LabError, NotFound
from labcore.kernel.journal import Scope

if TYPE_CHECKING:
    from labcore.image.oci import Image

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[0], MANIFEST_TYPES[2]
DEFAULT_REGISTRY = "registry-1.docker.io"
_REFERENCE = re.compile(r"^(?P<name>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                        r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


@dataclass
class Reference:
    registry: str
    repository: str
    tag: str = "latest"
    digest: str | None = None

    @property
    def name(self) -> str:
        """The name the image gets in the local store, as Docker shows it."""
        return self.repository.removeprefix("library/") if self.registry == DEFAULT_REGISTRY \
            else f"{self.registry}/{self.repository}"


def parse_reference(text: str) -> Reference:
    """Split ``[registry/]repository[:tag][@digest]`` as Docker does (a first part with . or : is a host)."""
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, remainder = first, rest
    else:
        registry, remainder = DEFAULT_REGISTRY, text
    match = _REFERENCE.match(remainder)
    if not match:
        raise BadInput(f"invalid reference format: {text!r}",
                       fix="use [REGISTRY/]NAME[:TAG][@sha256:DIGEST], e.g. localhost:5000/busybox:latest")
    repository = match["name"]
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    return Reference(registry, repository, match["tag"] or "latest", match["digest"])


def is_loopback(registry: str) -> bool:
    host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """One registry: requests with the right Accept headers, and a bearer token when the registry asks."""

    def __init__(self, registry: str):
        scheme = "http" if is_loopback(registry) else "https"
        self.base = f"{scheme}://{registry}"
        self.token: str | None = None

    def open(self, path: str, accept: tuple[str, ...] = (), method: str = "GET", data: bytes | None = None,
             content_type: str = "application/octet-stream"):
        """``path`` is /v2/...; an upload's Location may also be a whole URL (distribution-spec allows both)."""
        request = urllib.request.Request(urllib.parse.urljoin(self.base, path), data=data, method=method,
                                         headers={"Accept": ", ".join(accept)})
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as err:
            if err.code == 401 and not self.token and "Bearer" in err.headers.get("WWW-Authenticate", ""):
                self.token = fetch_token(err.headers["WWW-Authenticate"])
                return self.open(path, accept)
            if err.code == 404:
                raise NotFound(f"manifest unknown: {self.base}{path}", path=path) from err
            raise LabError(f"registry answered {err.code} for {self.base}{path}", path=path) from err
        except urllib.error.URLError as err:
            raise LabError(f"cannot reach the registry at {self.base}: {err.reason}",
                           fix="start one on loopback (docker-registry) or check the name") from err

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        with self.open(f"/v2/{repository}/manifests/{reference}", MANIFEST_TYPES) as response:
            return response.read(), response.headers.get_content_type()


def fetch_token(challenge: str) -> str:
    """The token dance of the distribution spec's auth: GET realm?service=..&scope=.. → {"token": ...}."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    with urllib.request.urlopen(f"{fields['realm']}?{query}", timeout=30) as response:
        body = json.load(response)
    return body.get("token") or body["access_token"]


def choose_platform(index: dict, os_name: str = "linux", architecture: str = "amd64") -> str:
    """The digest of the index entry for this platform, as the daemon picks it for `docker pull`."""
    for entry in index.get("manifests", []):
        platform = entry.get("platform", {})
        if platform.get("os") == os_name and platform.get("architecture") == architecture:
            return entry["digest"]
    raise NotFound(f"no matching manifest for {os_name}/{architecture} in the manifest list entries")


def verify(data: bytes, digest: str) -> bytes:
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise LabError(f"digest mismatch: the registry's content is not {digest}",
                       fix="the blob was corrupted or replaced in transit; pull again")
    return data


def download_blob(client: Client, repository: str, digest: str, size: int, directory: str
                  ) -> Iterator[dict]:
    """Stream one blob to ``directory/<hex>``, hashing as it goes; yield Docker's progress events."""
    short = digest.split(":")[1][:12]
    target = os.path.join(directory, digest.split(":")[1])
    hasher, done = hashlib.sha256(), 0
    with client.open(f"/v2/{repository}/blobs/{digest}") as response, open(target, "wb") as file:
        while chunk := response.read(1 << 16):
            hasher.update(chunk)
            file.write(chunk)
            done += len(chunk)
            yield {"status": "Downloading", "progressDetail": {"current": done, "total": size}, "id": short}
    if "sha256:" + hasher.hexdigest() != digest:
        raise LabError(f"digest mismatch for blob {digest}", fix="pull again")
    yield {"status": "Download complete", "progressDetail": {}, "id": short}


def pull(text: str, store=None) -> Generator[dict, None, "Image"]:
    """Pull ``text`` into the local store, yielding progress events as Docker's daemon does.

    The pulled image is the generator's return value: ``image = yield from pull(ref)``.
    """
    from labcore.image.oci import Store
    ref = parse_reference(text)
    store = store or Store()
    client = Client(ref.registry)
    manifest_bytes, media_type = client.manifest(ref.repository, ref.digest or ref.tag)
    # After the manifest, as dockerd does: a missing image is refused before the first progress line.
    yield {"status": f"Pulling from {ref.repository.removeprefix('library/')}", "id": ref.tag}
    if media_type in INDEX_TYPES or json.loads(manifest_bytes).get("manifests"):
        chosen = choose_platform(json.loads(manifest_bytes))
        manifest_bytes, media_type = client.manifest(ref.repository, chosen)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    with Scope() as scope:
        directory = make_download_dir(scope)
        for layer in manifest["layers"]:
            yield {"status": "Pulling fs layer", "progressDetail": {}, "id": layer["digest"][7:19]}
        for blob in [manifest["config"], *manifest["layers"]]:
            yield from download_blob(client, ref.repository, blob["digest"], blob["size"], directory)
        image = store.import_manifest(manifest_bytes, directory, name=ref.name, tag=ref.tag)
        for layer in manifest["layers"]:
            yield {"status": "Pull complete", "progressDetail": {}, "id": layer["digest"][7:19]}
    yield {"status": f"Digest: {manifest_digest}"}
    yield {"status": f"Status: Downloaded newer image for {ref.name}:{ref.tag}"}
    return image


def push(image: "Image", text: str, store=None) -> Iterator[dict]:
    """Upload ``image`` from the store as ``text``, yielding Docker's push events (distribution-spec, "Push"):

        HEAD /v2/<name>/blobs/<digest>                      200: the registry has it already, skip it
        POST /v2/<name>/blobs/uploads/                      202, and a Location to put the blob at
        PUT  <Location>?digest=<digest>   (the blob)        201: stored under its digest, checked by the registry
        PUT  /v2/<name>/manifests/<tag>   (the manifest)    201: the tag now names it

    Blobs go first: a registry refuses a manifest that names a blob it does not hold."""
    from labcore.image.oci import MANIFEST, Store
    ref = parse_reference(text)
    store, client = store or Store(), Client(ref.registry)
    yield {"status": f"The push refers to repository [{ref.registry}/{ref.repository}]"}
    manifest = store.read_blob(image.digest)
    parsed = json.loads(manifest)
    for blob in [*parsed["layers"], parsed["config"]]:
        yield upload_blob(client, ref.repository, blob["digest"], store)
    client.open(f"/v2/{ref.repository}/manifests/{ref.tag}", method="PUT", data=manifest,
                content_type=parsed.get("mediaType", MANIFEST)).close()
    yield {"status": f"{ref.tag}: digest: {image.digest} size: {len(manifest)}"}


def upload_blob(client: Client, repository: str, digest: str, store) -> dict:
    """One blob, in one PUT (the spec's "monolithic" upload); Docker's event for it."""
    short = digest[7:19]
    try:
        client.open(f"/v2/{repository}/blobs/{digest}", method="HEAD").close()
        return {"status": "Layer already exists", "progressDetail": {}, "id": short}
    except NotFound:
        pass
    with client.open(f"/v2/{repository}/blobs/uploads/", method="POST", data=b"") as response:
        location = response.headers["Location"]
    separator = "&" if "?" in location else "?"
    client.open(f"{location}{separator}digest={digest}", method="PUT", data=store.read_blob(digest)).close()
    return {"status": "Pushed", "progressDetail": {}, "id": short}


def pull_image(text: str, store=None, on_progress=lambda event: None) -> "Image":
    """Pull and return the image, handing each progress event to ``on_progress``."""
    events = pull(text, store)
    while True:
        try:
            on_progress(next(events))
        except StopIteration as done:
            return done.value


def make_download_dir(scope: Scope) -> str:
    """A journaled scratch directory: a pull killed half-way leaves nothing `labcore cleanup` misses."""
    from labcore.kernel.journal import make_scratch
    return make_scratch(scope, "labcore-pull-")
