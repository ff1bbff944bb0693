"""`labcore create [OPTIONS] IMAGE [COMMAND] [ARG...]`: `labcore run`'s flags, but nothing runs yet.

The container's record is written (state "created") and its id printed; `labcore start` runs it.
"""
from __future__ import annotations

from labcore.api import client
from labcore.cli import run as run_verb


def configure(parser):
    run_verb.configure(parser)


def run(args) -> int:
    spec = run_verb.spec_from_args(args)
    print(client.connect(args).create(spec))
    return 0
