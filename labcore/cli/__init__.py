"""The `labcore` command: the terminal twin of the notebooks, following `docker`'s verbs and flags.

Each verb lives in its own module here with two functions, ``configure(parser)`` and ``run(args) -> int``,
imported only when that verb is used, so `labcore run` does not pay for `labcore doctor`'s imports. Before any of
that, `labcore run` offers itself to this user's labd (``labcore.cli.handoff``), importing almost nothing.
"""
from __future__ import annotations

import sys

from labcore.errors import LabError

# verb -> one line of help. The module labcore.cli.<verb> does the work.
VERBS = {
    "doctor": "Show what this host lets the lab do, and why not",
    "cleanup": "Undo what crashed runs left behind (all of it with --all)",
    "images": "List images in the local store",
    "image": "Manage images (image inspect)",
    "load": "Load images from a tar archive (docker save, podman save, OCI layout)",
    "save": "Save images to a tar archive (an OCI layout that docker, podman and skopeo load)",
    "tag": "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
    "rmi": "Remove one or more images",
    "run": "Run a command in a new container",
    "commit": "Create a new image from a container's changes",
    "build": "Build an image from a Labfile (FROM, RUN, COPY, ENV, WORKDIR, CMD, ENTRYPOINT)",
    "daemon": "Serve the Docker Engine API on a Unix socket (also installed as labd)",
    "create": "Create a new container (prints its id; `labcore start` runs it)",
    "start": "Start one or more stopped containers",
    "ps": "List containers",
    "logs": "Fetch the logs of a container",
    "exec": "Execute a command in a running container",
    "stop": "Stop one or more running containers (SIGTERM, then SIGKILL)",
    "kill": "Kill one or more running containers",
    "wait": "Block until one or more containers stop, then print their exit codes",
    "rm": "Remove one or more containers",
    "inspect": "Return low-level information on containers, as JSON",
    "pull": "Download an image from a registry",
    "network": "Manage networks (create, ls, inspect, rm, connect, disconnect, prune)",
    "composerize": "Turn a `docker run` command into a compose file (YAML), for docker-compose",
}


def build_parser(verbs: dict[str, str] = VERBS) -> "argparse.ArgumentParser":
    import argparse                 # here: a `labcore run` that labd does (labcore.cli.handoff) never needs it
    parser = argparse.ArgumentParser(prog="labcore", description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", metavar="unix:///PATH",
                        help="talk to labd at this socket, as `docker -H` (default: $LABCORE_HOST; unset: no "
                             "daemon, the engine runs in this process)")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, summary in verbs.items():
        module = _verb_module(verb)
        verb_parser = sub.add_parser(verb, help=summary, description=summary)
        module.configure(verb_parser)
        verb_parser.set_defaults(handler=module.run)
    return parser


def _verb_module(verb: str):
    import importlib
    return importlib.import_module(f"labcore.cli.{verb}")


def verb_in(argv: list[str]) -> str | None:
    """The first word that is neither a global option nor its value (`labcore -H unix:///s ps`)."""
    words = iter(argv)
    for word in words:
        if word in ("-H", "--host"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _exit_on_signal(signum, frame):
    # SIGTERM/SIGHUP leave through SystemExit, so every `with Scope()` still undoes what it made.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:             # no -H before it: this user's labd may do it (labcore.cli.handoff)
        from labcore.cli.handoff import hand_off
        code = hand_off(argv[1:])
        if code is not None:
            return code
    # Build only the chosen verb's parser: importing every verb would slow down each start.
    chosen = verb_in(argv)
    parser = build_parser({chosen: VERBS[chosen]} if chosen in VERBS else VERBS)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    import signal
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    try:
        return args.handler(args) or 0
    except LabError as err:
        print(f"labcore: {err}", file=sys.stderr)
        return 125          # docker's exit code when the daemon/runtime itself fails
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `labcore doctor | head`: the reader left early. Point stdout at /dev/null so the interpreter's
        # final flush does not raise again (the recipe in Python's signal module documentation).
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
