"""`labcore commit CONTAINER IMAGE[:TAG]`: `docker commit`, done by ``labcore.runtime.build.commit_image``, in this
process or in labd (`-H`).

The container's upperdir — everything it wrote, and a whiteout for everything it deleted — becomes one more
layer on top of its image's layers. A container kept after it exited (run without --rm) still has its
upperdir; prints the new IMAGE ID, as docker does.
"""
from __future__ import annotations


def configure(parser):
    parser.add_argument("-m", "--message", default="", help="the history entry's text (default: the command)")
    parser.add_argument("container", metavar="CONTAINER")
    parser.add_argument("image", metavar="IMAGE[:TAG]")


def run(args) -> int:
    from labcore.api import client
    print(client.connect(args).container_commit(args.container, args.image, comment=args.message))
    return 0
