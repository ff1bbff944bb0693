"""`labcore exec [-i] [-e] [-w] [-u] CONTAINER COMMAND [ARG...]`: another process in a running container.

No new container: the command joins pid 1's namespaces with setns(2) (``labcore.runtime.container.exec_in``), in
three requests as Docker makes them: create the exec, start it (output comes back as frames), inspect it
for the exit code, which becomes ours. -i hands the command this terminal's stdin (in-process only).
"""
from __future__ import annotations

import argparse

from labcore.api import client
from labcore.errors import BadInput, LabError


def configure(parser):
    parser.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY (not yet: refused)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="UID or UID:GID to run the command as")
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def run(args) -> int:
    if not args.command:
        raise BadInput("exec needs a command", fix="labcore exec CONTAINER COMMAND [ARG...]")
    if args.tty:
        raise BadInput("exec -t: the lab's exec has no terminal of its own yet",
                       fix="leave out -t (`labcore exec -i CONTAINER sh` works without a prompt's niceties)")
    backend = client.connect(args)
    try:
        exec_id = backend.exec_create(args.container, args.command, args.env, args.workdir, args.user)
        for stream, data in backend.exec_start(exec_id, interactive=args.interactive):
            client.write(stream, data)
        return backend.exec_inspect(exec_id)["ExitCode"]
    except LabError as error:
        if isinstance(error, BadInput):
            raise                               # bad flags are labcore's refusal: 125, like `docker exec`
        client.report(error)
        return 1
