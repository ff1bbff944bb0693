"""`labcore rm [-f] CONTAINER...`: remove stopped containers: their files, and what the journal holds.

A running container is refused, in Docker's words, unless -f: then it is killed first.
"""
from __future__ import annotations

from labcore.api import client


def configure(parser):
    parser.add_argument("-f", "--force", action="store_true", help="force the removal of a running container")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend = client.connect(args)
    return client.for_each(args.containers, lambda ref: backend.remove(ref, args.force))
