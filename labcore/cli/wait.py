"""`labcore wait CONTAINER...`: block until each container stops, then print its exit code."""
from __future__ import annotations

from labcore.api import client


def configure(parser):
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend = client.connect(args)
    return client.for_each(args.containers, lambda ref: print(backend.wait(ref), flush=True), echo=False)
