"""`labcore build [-f LABFILE] [-t NAME[:TAG]] DIR`: `docker build`, for a Labfile (a Dockerfile subset: FROM,
RUN, COPY, ENV, WORKDIR, CMD, ENTRYPOINT), done by ``labcore.runtime.build.build`` in this process or in labd
(`-H`: the context goes up as a tar, as `docker build` sends it). Prints each step as Docker's classic builder
does, with "---> Using cache" for a step whose result the build cache already holds.
"""
from __future__ import annotations


def configure(parser):
    parser.add_argument("-f", "--file", metavar="LABFILE", help="the Labfile (default: DIR/Labfile)")
    parser.add_argument("-t", "--tag", metavar="NAME[:TAG]", help="name the image (default: untagged)")
    parser.add_argument("context", metavar="DIR", help="the build context: COPY's sources are under it")


def run(args) -> int:
    from labcore.api import client
    client.connect(args).image_build(args.context, args.file, args.tag)
    return 0
