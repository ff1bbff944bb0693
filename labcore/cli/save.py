"""`labcore save`: one or more images as a tar archive that podman, skopeo, containerd and Docker load.

The archive is an OCI image layout with Docker's manifest.json beside it (see ``labcore.image.archive``). As
`docker save` does, it goes to STDOUT unless ``-o`` names a file, and never to a terminal.
"""
from __future__ import annotations

import sys

from labcore.errors import BadInput


def configure(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or image ID")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to a file, instead of STDOUT")


def run(args) -> int:
    from labcore.api import client
    if args.output is None and sys.stdout.isatty():
        raise BadInput("cowardly refusing to save to a terminal", fix="use the -o flag or redirect")
    client.connect(args).image_save(args.images, args.output if args.output is not None else sys.stdout.buffer)
    return 0
