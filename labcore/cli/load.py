"""`labcore load`: store the images in an archive that `docker save`, `podman save` or skopeo wrote.

Prints what Docker prints: ``Loaded image: busybox:latest`` per name, ``Loaded image ID: sha256:...`` for an
image without one. The formats, and the checks on the way in, are in ``labcore.image.archive``.
"""
from __future__ import annotations

import sys

from labcore.errors import BadInput


def configure(parser):
    parser.add_argument("-i", "--input", metavar="FILE",
                        help="read from a tar archive file (or an OCI layout directory), instead of STDIN")


def run(args) -> int:
    from labcore.api import client
    if args.input is None and sys.stdin.isatty():
        raise BadInput("requested load from stdin, but stdin is empty",
                       fix="labcore load -i FILE, or labcore load < FILE")
    print("\n".join(client.connect(args).image_load(args.input if args.input is not None else sys.stdin.buffer)))
    return 0
