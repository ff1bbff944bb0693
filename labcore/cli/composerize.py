"""`labcore composerize 'docker run [OPTIONS] IMAGE [COMMAND] [ARG...]'`: the same container as a compose file.

The command is read with `labcore run`'s own flags (``labcore.cli.run``) and turned into a service by
``labcore.runtime.compose``; the YAML goes to stdout, for `docker-compose -f - config` or a docker-compose.yml.
A flag `labcore run` does not have, or one the file cannot hold, is refused by name (exit status 125).
"""
from __future__ import annotations

import argparse
import shlex

from labcore.cli import run as run_verb
from labcore.errors import BadInput
from labcore.runtime import compose

PREFIXES = (["docker", "run"], ["docker", "container", "run"], ["labcore", "run"], ["run"])
# Flags of `docker run` that labcore's engine takes (runtime.spec.Spec) beyond `labcore run`'s own.
MORE_FLAGS = {"--group-add": dict(action="append", default=[], metavar="GROUP"),
              "--tmpfs": dict(action="append", default=[], metavar="PATH[:OPTIONS]"),
              "--init": dict(action="store_true"), "--pid": dict(default=""), "--uts": dict(default="")}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="'docker run [OPTIONS] IMAGE [COMMAND]'",
                        help="the command, quoted as one argument (or its words, after --)")


def run(args: argparse.Namespace) -> int:
    words = words_of(args.words)
    spec, detach = parse_run(words)
    print(compose.composerize(spec, detach, command=shlex.join(words)), end="")
    return 0


def words_of(given: list[str]) -> list[str]:
    """One quoted argument is split as a shell would; several are the words already."""
    given = given[1:] if given[:1] == ["--"] else given
    try:
        words = shlex.split(given[0]) if len(given) == 1 else given
    except ValueError as err:                       # shlex: "No closing quotation", "No escaped character"
        raise BadInput(f"the command cannot be split into words: {err}",
                       fix="quote it as a shell would: close every quote, e.g. "
                           "labcore composerize 'docker run -e \"GREETING=hello there\" busybox'") from None
    if not words:
        raise BadInput("no command to composerize", fix="labcore composerize 'docker run -p 8080:80 nginx'")
    return words


class RunParser(argparse.ArgumentParser):
    """`labcore run`'s parser, refusing with BadInput instead of exiting the process."""

    def error(self, message: str):
        raise BadInput(f"docker run: {message}", fix="labcore run --help lists the flags, in docker's syntax")


def run_parser() -> RunParser:
    parser = RunParser(prog="docker run", add_help=False)
    run_verb.configure(parser)
    for flag, options in MORE_FLAGS.items():
        if flag not in parser._option_string_actions:       # labcore run may take it one day: not twice
            parser.add_argument(flag, **options)
    return parser


def parse_run(words: list[str]):
    """(the Spec, -d) of a `docker run` command line; BadInput naming a flag labcore does not take."""
    prefix = next((p for p in PREFIXES if words[:len(p)] == p), None)
    if prefix is None and words[0] in ("docker", "labcore"):
        raise BadInput(f"not a run command: {shlex.join(words[:2])}", fix="give a `docker run ...` command")
    parser = run_parser()
    args, unknown = parser.parse_known_args(words[len(prefix or []):])
    if unknown:
        accepted = ", ".join(sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")}
                                    - {"--uts"}))                  # taken only to be refused by its name
        raise BadInput(f"{unknown[0].split('=')[0]} is not a flag labcore run supports",
                       fix=f"leave it out; accepted: {accepted}")
    spec = run_verb.spec_from_args(args)
    spec.group_add, spec.tmpfs, spec.init, spec.pid, spec.uts = (args.group_add, args.tmpfs, args.init,
                                                                args.pid, args.uts)
    return spec, args.detach
