"""`labcore stop [-t N] CONTAINER...`: SIGTERM to pid 1, then SIGKILL after N seconds (default 10).

pid 1 ignores a SIGTERM it has no handler for (pid_namespaces(7)), so `stop` on a bare `sleep` takes the
whole grace period: see ``labcore.runtime.engine.stop``. A container that is not running is left as it is.
"""
from __future__ import annotations

from labcore.api import client


def configure(parser):
    parser.add_argument("-t", "--time", type=int, default=10, metavar="N",
                        help="seconds to wait before killing the container (default 10)")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend = client.connect(args)
    return client.for_each(args.containers, lambda ref: backend.stop(ref, args.time))
