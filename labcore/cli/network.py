"""`labcore network create|ls|inspect|rm|connect|disconnect|prune`: user-defined networks, as `docker network`.

A network is a record until its first container starts: then it gets a bridge of its own and an address
range, and its containers find each other by name (``labcore.runtime.networks``, ``labcore.runtime.dns``).
Like every verb,
it calls the engine in this process, or labd's ``/networks`` routes with --host.
"""
from __future__ import annotations

import json

from labcore.api import client


def configure(parser):
    sub = parser.add_subparsers(dest="action", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="Create a network")
    create.add_argument("--subnet", help="its address range in CIDR form (default: the next free 10.203.N.0/24)")
    create.add_argument("-d", "--driver", default="bridge", help="bridge, the only driver of the lab")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="set metadata")
    create.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE", help="driver options")
    create.add_argument("name", metavar="NETWORK")
    listing = sub.add_parser("ls", help="List networks")
    listing.add_argument("-q", "--quiet", action="store_true", help="only show network IDs")
    for verb, text in (("inspect", "Display detailed information on networks"), ("rm", "Remove networks")):
        sub.add_parser(verb, help=text).add_argument("networks", nargs="+", metavar="NETWORK")
    connect = sub.add_parser("connect", help="Connect a container to a network (before it starts)")
    connect.add_argument("--alias", action="append", default=[], help="another name for it on this network")
    disconnect = sub.add_parser("disconnect", help="Disconnect a container from a network (while stopped)")
    for verb in (connect, disconnect):
        verb.add_argument("network", metavar="NETWORK")
        verb.add_argument("container", metavar="CONTAINER")
    sub.add_parser("prune", help="Remove every network no running container is on")


def run(args) -> int:
    backend = client.connect(args)
    if args.action == "create":
        print(backend.network_create(args.name, args.subnet, pairs(args.label), pairs(args.opt), args.driver))
    elif args.action == "ls":
        rows = backend.networks()
        print("\n".join(row["Id"][:12] for row in rows) if args.quiet else table(rows))
    elif args.action == "inspect":
        found = []
        status = client.for_each(args.networks, lambda ref: found.append(backend.network_inspect(ref)), echo=False)
        print(json.dumps(found, indent=4))
        return status
    elif args.action == "rm":
        return client.for_each(args.networks, backend.network_remove)
    elif args.action == "connect":
        backend.network_connect(args.network, args.container, args.alias)
    elif args.action == "disconnect":
        backend.network_disconnect(args.network, args.container)
    elif args.action == "prune":
        removed = backend.network_prune()
        print("Deleted Networks:\n" + "".join(name + "\n" for name in removed) if removed else "", end="")
    return 0


def pairs(items: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


def table(rows: list[dict]) -> str:
    """`docker network ls`'s columns: NETWORK ID (12 digits), NAME, DRIVER, SCOPE."""
    cells = [["NETWORK ID", "NAME", "DRIVER", "SCOPE"]] + [[r["Id"][:12], r["Name"], r["Driver"], r["Scope"]]
                                                           for r in rows]
    widths = [max(len(line[i]) for line in cells) + 3 for i in range(3)]
    return "\n".join("".join(cell.ljust(width) for cell, width in zip(line, widths)) + line[-1] for line in cells)
