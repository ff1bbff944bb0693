"""`labcore logs [-f] CONTAINER`: what the container wrote, stdout to stdout and stderr to stderr.

The engine's monitor kept the output in Docker's frames (``labcore.runtime.engine``); with -f the reading goes on
until the container exits, as `docker logs -f` does.
"""
from __future__ import annotations

from labcore.api import client
from labcore.errors import LabError


def configure(parser):
    parser.add_argument("-f", "--follow", action="store_true", help="follow log output until the container exits")
    parser.add_argument("container", metavar="CONTAINER")


def run(args) -> int:
    try:
        for stream, data in client.connect(args).logs(args.container, follow=args.follow):
            client.write(stream, data)
    except LabError as error:
        client.report(error)
        return 1
    return 0
