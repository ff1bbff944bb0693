"""`labcore inspect CONTAINER...`: the Engine API's container JSON, as `docker inspect` prints it.

One JSON array, an object per container found; the missing ones are named on stderr and make the exit 1.
"""
from __future__ import annotations

import json

from labcore.api import client


def configure(parser):
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend, found = client.connect(args), []
    status = client.for_each(args.containers, lambda ref: found.append(backend.inspect(ref)), echo=False)
    print(json.dumps(found, indent=4))
    return status
