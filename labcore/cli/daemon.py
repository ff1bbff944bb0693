"""`labcore daemon` (also installed as `labd`): serve the Docker Engine API on a Unix socket."""
import sys


def configure(parser):
    parser.add_argument("--socket", help="the Unix socket to listen on (default: <state dir>/labd.sock)")
    parser.add_argument("--tcp", metavar="127.0.0.1:PORT",
                        help="also listen on this loopback address (never on a network: it would be root "
                             "for anyone who can reach it)")
    parser.add_argument("--debug", action="store_true", help="log each request to stderr")


def run(args) -> int:
    from labcore.api import labd, routes
    from labcore.cli import handoff
    try:
        labd.serve(routes.table() + handoff.routes(), args.socket, args.tcp, verbose=args.debug)
    finally:
        handoff.stop_runs()           # the `labcore run`s handed to it: their containers go with it
    return 0


def main() -> int:
    """The `labd` command: `labcore daemon` under the name Docker users expect of a daemon."""
    from labcore.cli import main as labcore_main
    return labcore_main(["daemon", *sys.argv[1:]])
