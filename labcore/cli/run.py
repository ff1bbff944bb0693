"""`labcore run [OPTIONS] IMAGE [COMMAND] [ARG...]`: `docker run`, done by ``labcore.container``.

The exit status is the command's (128+N when signal N killed it); as with Docker, 127 when the command is
not found in the image, 126 when it cannot be executed, 125 when labcore itself refuses or fails. Bad input
is refused before anything is created.
"""
from __future__ import annotations

import argparse
import errno
import sys

from labcore import container
from labcore.errors import LabError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    parser.add_argument("--hostname", help="container host name (default: the first 12 hex digits of its id)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="set an environment variable (NAME alone passes yours on)")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="UID or UID:GID to run the command as")
    parser.add_argument("--entrypoint", help="overwrite the image's ENTRYPOINT (and drop its CMD)")
    parser.add_argument("--name", default="", help="assign a name to the container")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def spec_from_args(args: argparse.Namespace) -> container.Spec:
    # docker takes --entrypoint as one executable name, never split; "" clears the image's entrypoint.
    entrypoint = None if args.entrypoint is None else ([args.entrypoint] if args.entrypoint else [])
    return container.Spec(image=args.image, cmd=args.command or None, entrypoint=entrypoint, env=args.env,
                          workdir=args.workdir, user=args.user, hostname=args.hostname, tty=args.tty,
                          interactive=args.interactive, name=args.name, rm=args.rm)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    try:
        result = container.run(spec, stdio="tty" if spec.tty else "inherit")
    except LabError as err:
        if err.syscall != "execve":
            raise
        print(f"labcore: {err}", file=sys.stderr)
        return 127 if err.errno == errno.ENOENT else 126
    return result.exit_code
