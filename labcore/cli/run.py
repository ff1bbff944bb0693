"""`labcore run [OPTIONS] IMAGE [COMMAND] [ARG...]`: `docker run`, done by ``labcore.runtime.container``.

Where this user's labd runs (its socket answers), `labcore run` hands the run to it before it even parses
its flags (``labcore.cli.handoff``): labd parses them as here and runs the container on this process's own
stdout and stderr, and this process imports no runtime (bench row g2). Only a run whose meaning is all in its
flags goes there: -i, -t, -v (paths relative to here) and `-e NAME` (a value from this process's environment)
run here, as does -d without --host. With --host (or $LABCORE_HOST), `labcore run` speaks Docker's API, as
the docker CLI does: create, start, logs, wait, remove (``run_through``).

The exit status is the command's (128+N when signal N killed it); as with Docker, 127 when the command is
not found in the image, 126 when it cannot be executed, 125 when labcore itself refuses or fails. Bad input
is refused before anything is created.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from labcore.api import client
from labcore.errors import BadInput, LabError
from labcore.runtime.spec import Spec


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("-d", "--detach", action="store_true",
                        help="run the container in the background and print its id")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
    parser.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    parser.add_argument("--hostname", help="container host name (default: the first 12 hex digits of its id)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="set an environment variable (NAME alone passes yours on)")
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="NAME|UID[:GROUP|GID] to run the command as (names from the image)")
    parser.add_argument("--entrypoint", help="overwrite the image's ENTRYPOINT (and drop its CMD)")
    parser.add_argument("--name", default="", help="assign a name to the container")
    parser.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]",
                        help="bind-mount an existing host directory or file (absolute paths; :ro read-only)")
    parser.add_argument("--network", default="bridge", metavar="NETWORK",
                        help="bridge: a veth pair on lcbr0 (the default); none: loopback only; or a network of "
                   "`labcore network create`, where containers find each other by name")
    parser.add_argument("--mac-address", metavar="MAC", help="eth0's MAC address (default: 02:42 and its IPv4 "
                                                   "address, as Docker makes it)")
    parser.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                        help="another name for the container on its (user-defined) network")
    parser.add_argument("-p", "--publish", action="append", default=[], metavar="[127.0.0.1:]HOST:CONTAINER",
                        help="publish a container's port on the host's loopback")
    limits = parser.add_argument_group("resource limits (control groups), in Docker's syntax")
    limits.add_argument("-m", "--memory", help="memory limit, e.g. 64m or 1g")
    limits.add_argument("--memory-swap", help="memory plus swap, e.g. 128m (default: no swap)")
    limits.add_argument("--cpus", help="number of CPUs, e.g. 0.5")
    limits.add_argument("-c", "--cpu-shares", help="relative CPU weight, e.g. 512 (default 1024)")
    limits.add_argument("--pids-limit", help="how many processes at most (-1: unlimited)")
    limits.add_argument("--device-read-bps", action="append", default=[], metavar="DEVICE:RATE",
                        help="limit read rate from a device, e.g. /dev/vda:1mb")
    limits.add_argument("--device-write-bps", action="append", default=[], metavar="DEVICE:RATE",
                        help="limit write rate to a device, e.g. /dev/vda:1mb")
    limits.add_argument("--device-cgroup-rule", action="append", default=[], metavar="RULE",
                        help="allow a device, e.g. 'c 1:3 rwm' (others are denied once one is given)")
    security = parser.add_argument_group("confinement (Docker's defaults unless changed here)")
    security.add_argument("--privileged", action="store_true",
                help="every capability and host device, no seccomp, nothing masked or read-only")
    security.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                help="add a capability, e.g. NET_ADMIN, or ALL")
    security.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                help="drop a capability, e.g. CHOWN, or ALL")
    security.add_argument("--security-opt", action="append", default=[], metavar="OPTION",
                help="seccomp=unconfined, seccomp=PROFILE.json (a Docker profile), no-new-privileges")
    security.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    security.add_argument("--device", action="append", default=[], metavar="HOST[:CONTAINER[:rwm]]",
                help="give the container a host device, e.g. /dev/fuse")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


LIMIT_FLAGS = ("memory", "memory_swap", "cpus", "cpu_shares", "pids_limit", "device_read_bps",
               "device_write_bps", "device_cgroup_rule")


def spec_from_args(args: argparse.Namespace) -> Spec:
    # docker takes --entrypoint as one executable name, never split; "" clears the image's entrypoint.
    entrypoint = None if args.entrypoint is None else ([args.entrypoint] if args.entrypoint else [])
    return Spec(image=args.image, cmd=args.command or None, entrypoint=entrypoint, env=args.env,
                workdir=args.workdir, user=args.user, hostname=args.hostname, tty=args.tty,
                interactive=args.interactive, name=args.name, rm=args.rm,
                limits={flag: getattr(args, flag) for flag in LIMIT_FLAGS if getattr(args, flag)},
                network=args.network, publish=args.publish, volumes=args.volume,
                mac_address=args.mac_address,
                endpoints={args.network: {"Aliases": args.network_alias}} if args.network_alias else None,
                privileged=args.privileged, cap_add=args.cap_add, cap_drop=args.cap_drop,
                security_opt=args.security_opt, read_only=args.read_only, devices=args.device)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    if args.detach or client.host_of(args):
        return run_through(client.connect(args), spec, args.detach)
    return run_here(spec)


def run_here(spec: Spec, outputs: tuple[int, int] = (1, 2), on_start=None) -> int:
    """The container in this process, on ``outputs`` as its stdout and stderr (labd's: a client's,
    ``labcore.cli.handoff``); the command's exit code, or Docker's 127 and 126 when it cannot be executed."""
    from labcore.runtime import container
    try:
        result = container.run(spec, stdio="tty" if spec.tty else "inherit", outputs=outputs, on_start=on_start)
    except LabError as err:
        if err.syscall != "execve":
            raise
        os.write(outputs[1], f"labcore: {err}\n".encode())
        return 127 if err.errno == errno.ENOENT else 126
    return result.exit_code


def self_contained(spec: Spec) -> bool:
    """The run means the same in labd as here: no terminal or input of this process, no path relative to its
    directory, no value from its environment."""
    return not (spec.tty or spec.interactive or spec.volumes or any("=" not in item for item in spec.env))


def run_through(backend, spec: Spec, detach: bool) -> int:
    """`docker run` as the client does it: create, start, then (attached) logs until the end, wait, remove.

    Attached, the client removes the container itself after `wait` instead of asking the daemon for
    AutoRemove: a container the daemon removed at its exit would leave `wait` and `logs` nothing to find."""
    if spec.interactive and not detach:
        raise BadInput("-i through labd: labd has no attach route to carry your input",
                       fix="leave out -i, or run without --host/LABCORE_HOST")
    remove, spec.rm = spec.rm and not detach, spec.rm and detach
    container_id = backend.create(spec)
    try:
        try:
            backend.start(container_id)
        except LabError as err:
            if "execve" not in err.message:
                raise
            # The daemon's answer is a message: the docker CLI too reads 127 or 126 from its words (cli/command/
            # container/run.go, runStartContainerErr), so `labcore run` exits alike with labd and without.
            print(f"labcore: {err}", file=sys.stderr)
            return 127 if "No such file" in err.message else 126
        if detach:
            print(container_id)
            return 0
        for stream, data in backend.logs(container_id, follow=True):
            client.write(stream, data)
        return backend.wait(container_id)
    finally:
        if remove:
            backend.remove(container_id, force=True)
