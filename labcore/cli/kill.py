"""`labcore kill [-s SIGNAL] CONTAINER...`: send a signal to pid 1 from the host (default SIGKILL).

From the host SIGKILL always works; any other signal reaches pid 1 only if it installed a handler.
"""
from __future__ import annotations

from labcore.api import client


def configure(parser):
    parser.add_argument("-s", "--signal", default="KILL", help="signal to send: a name or number (default KILL)")
    parser.add_argument("containers", nargs="+", metavar="CONTAINER")


def run(args) -> int:
    backend = client.connect(args)
    return client.for_each(args.containers, lambda ref: backend.kill(ref, args.signal))
