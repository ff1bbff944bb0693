"""`./lab hub`: JupyterHub for a class on this VM (see ``tools/hub/__init__.py``).

    ./lab hub [--roster FILE] [--auth pam|firstuse] [--port 8000] [--memory 1g] [--cpus 1] [--pids 512] ...
    ./lab hub remove --roster FILE          remove the roster's accounts, homes included (end of term)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tools.hub import roster
from tools.hub.settings import AUTHENTICATORS, ROOT, STATE, Settings, proxy_command


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./lab hub", description=__doc__.splitlines()[0])
    parser.add_argument("--roster", type=Path, help="one student a line: NAME [PASSWORD]; their accounts are "
                                                    "made if missing (roster.py)")
    parser.add_argument("--auth", choices=sorted(AUTHENTICATORS), default="pam",
                        help="; ".join(f"{k}: {v}" for k, v in AUTHENTICATORS.items()))
    parser.add_argument("--open-signup", action="store_true",
                        help="with --auth firstuse and no roster: anyone who reaches the hub may make an account")
    parser.add_argument("--group", default="labcore-class", help="the Unix group the hub lets in")
    parser.add_argument("--admin", action="append", default=[], help="a user who may manage the hub")
    parser.add_argument("--ip", default="", help="the address to serve on (default: every address)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--hub-api-port", type=int, default=8081, help="the hub's own API, on loopback")
    parser.add_argument("--proxy-api-port", type=int, default=8001, help="the proxy's API, on loopback")
    parser.add_argument("--memory", default="1g", help="each student's memory, in Docker's syntax")
    parser.add_argument("--cpus", default="1", help="each student's CPUs at most")
    parser.add_argument("--pids", default="512", help="each student's processes and threads at most")
    parser.add_argument("--state", type=Path, default=STATE, help="the hub's database, secret and journal")
    parser.add_argument("verb", nargs="?", choices=["serve", "remove"], default="serve")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> list[roster.Student]:
    """Everything refused before anything changes: not root, a bad roster, bad limits, no proxy."""
    from tools.hub.fairness import class_limits
    if os.geteuid() != 0:
        raise SystemExit("./lab hub starts each student's server as that student: run it as root (sudo)")
    students = roster.parse(args.roster.read_text()) if args.roster else []
    if args.auth == "firstuse" and not students and not args.open_signup:
        raise SystemExit("--auth firstuse needs a roster (who may make an account), or --open-signup to let "
                         "anyone who reaches the hub make one")
    class_limits(args.memory, args.cpus, args.pids)
    if not proxy_command():
        raise SystemExit("configurable-http-proxy not found: ./lab hub installs it with npm "
                         "(apt-get install nodejs npm)")
    return students


def make_accounts(students: list[roster.Student], group: str, state: Path) -> None:
    """The roster's accounts; the passwords of new ones go to a file only root reads, for the instructor."""
    roster.ensure_group(group)
    made = []
    for student in students:
        password = roster.add(student, group)
        if password is not None:
            made.append(f"{student.name} {password}")
    if made:
        sheet = state / "new-accounts.txt"
        with open(os.open(sheet, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as file:
            file.write("\n".join(made) + "\n")
        print(f"lab: {len(made)} accounts made; their passwords are in {sheet} (root only)", file=sys.stderr)


def serve(args: argparse.Namespace) -> int:
    students = check(args)
    args.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    clean_up_after_a_crash(args.state)
    if args.auth == "pam":                  # firstuse makes each account at its first login instead
        make_accounts(students, args.group, args.state)
    settings = Settings(root=str(ROOT), state=str(args.state), bind_url=f"http://{args.ip}:{args.port}",
                        hub_bind_url=f"http://127.0.0.1:{args.hub_api_port}",
                        proxy_api_url=f"http://127.0.0.1:{args.proxy_api_port}",
                        proxy=proxy_command(), auth=args.auth, group=args.group,
                        students=[s.name for s in students], admins=args.admin, open_signup=args.open_signup,
                        limits={"memory": args.memory, "cpus": args.cpus, "pids": args.pids})
    environment = dict(os.environ, LABCORE_HUB_SETTINGS=str(settings.write()))
    environment.pop("LABCORE_HOME", None)   # the students' state is in their own homes
    os.chdir(args.state)
    hub = str(ROOT / ".venv" / "bin" / "jupyterhub")
    os.execve(hub, [hub, "-f", str(ROOT / "tools" / "hub" / "jupyterhub_config.py")], environment)


def clean_up_after_a_crash(state: Path) -> None:
    """Students' groups a crashed hub left (their records outlive their owner): killed and removed."""
    from labcore.kernel.journal import Journal
    undone, failures = Journal(state / "journal").undo_orphans()
    for failure in failures:
        print(f"lab: could not undo: {failure}", file=sys.stderr)


def remove(args: argparse.Namespace) -> int:
    if not args.roster:
        raise SystemExit("./lab hub remove needs --roster FILE: the accounts to remove")
    for student in roster.parse(args.roster.read_text()):
        roster.remove(student.name)
        print(f"lab: removed {student.name} and their home", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from labcore.errors import BadInput
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return remove(args) if args.verb == "remove" else serve(args)
    except (roster.RosterError, BadInput) as err:
        print(f"lab hub: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
