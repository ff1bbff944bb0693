"""`labcore start [-a] CONTAINER...`: run created or exited containers (``labcore.runtime.engine.start``).

With -a the output follows until the container exits, and the exit code is the container's.
"""
from __future__ import annotations

from labcore.api import client
from labcore.errors import BadInput, LabError


def configure(parser):
    parser.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR, return the exit code")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend = client.connect(args)
    if not args.attach:
        return client.for_each(args.containers, backend.start)
    if len(args.containers) > 1:
        raise BadInput("you cannot start and attach multiple containers at once", fix="start -a one CONTAINER")
    ref = args.containers[0]
    try:
        backend.start(ref)
        for stream, data in backend.logs(ref, follow=True):
            client.write(stream, data)
        return backend.wait(ref)
    except LabError as error:
        client.report(error)
        return 1
