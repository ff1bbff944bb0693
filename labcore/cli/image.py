"""`labcore image inspect`: what the store knows about an image, in the JSON shape of `docker image inspect`.

Id is the config's digest; RepoDigests pair each name with its manifest's digest (what a registry calls the
image); RootFS.Layers are the diff_ids, the digests of the *uncompressed* layers, which is why they differ
from the blob digests that `skopeo inspect` lists as Layers. Size is of the layers as stored (compressed);
Docker's is unpacked, so larger. History, which Docker shows with `docker history`, is included here.
The answer is labd's GET /images/{name}/json (``labcore.api.routes.image_inspect``), in this process or through
`-H`.
"""
from __future__ import annotations

import json
import sys

from labcore.errors import NotFound


def configure(parser):
    sub = parser.add_subparsers(dest="action", metavar="COMMAND", required=True)
    inspect = sub.add_parser("inspect", help="Display detailed information on one or more images")
    inspect.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or image ID")


def run(args) -> int:
    from labcore.api import client
    backend, found, status = client.connect(args), [], 0
    for ref in args.images:
        try:
            found.append(backend.image_inspect(ref))
        except NotFound as err:                 # as Docker: the others are still shown, and the exit is 1
            print(f"Error: {err.message}", file=sys.stderr)
            status = 1
    print(json.dumps(found, indent=4))
    return status
