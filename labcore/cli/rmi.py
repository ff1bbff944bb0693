"""`labcore rmi`: remove names, and the image once no name is left (``labcore.runtime.images.remove``).

Prints Docker's lines: ``Untagged: busybox:latest``, then ``Deleted: sha256:...`` once the last name has gone.
An image with several names, or one a container uses, is refused unless ``-f``.
"""
from __future__ import annotations

import sys

from labcore.errors import LabError


def configure(parser):
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or image ID")
    parser.add_argument("-f", "--force", action="store_true",
                        help="remove every name of an image ID, and an image that a container uses")


def run(args) -> int:
    from labcore.api import client
    backend, status = client.connect(args), 0
    for ref in args.images:                     # Docker goes on after a failure and exits 1 at the end
        try:
            print("\n".join(backend.image_remove(ref, args.force)))
        except LabError as err:
            print(f"labcore: {err}", file=sys.stderr)
            status = 1
    return status
