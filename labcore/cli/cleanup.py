"""`labcore cleanup`: replay the undo journal for objects whose creator is gone (all of them with --all)."""
from labcore.journal import Journal


def configure(parser):
    parser.add_argument("--all", action="store_true",
                        help="also undo objects whose creating process is still running")


def run(args) -> int:
    journal = Journal()
    undone, failures = journal.undo_all() if args.all else journal.undo_orphans()
    for entry in undone:
        print(f"removed {entry.describe()}")
    for failure in failures:
        print(f"could not remove {failure}")
    if not undone:
        print("nothing to clean up")
    return 1 if failures else 0
