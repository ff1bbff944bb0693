"""`labcore tag`: give an image another name. Only index.json changes: a name is a pointer to a manifest's
digest, so no blob is copied and the IMAGE ID stays the same (`labcore images` shows both names). The name is
checked, and given, by ``labcore.runtime.images.tag``, in this process or in labd (`-H`)."""
from __future__ import annotations


def configure(parser):
    parser.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    parser.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def run(args) -> int:
    from labcore.api import client
    client.connect(args).image_tag(args.source, args.target)
    return 0
