"""`labcore cleanup`: replay the undo journal for objects whose creator is gone (all of them with --all)."""
from labcore.kernel import journal


def configure(parser):
    parser.add_argument("--all", action="store_true",
                        help="also undo objects whose creating process is still running")


def run(args) -> int:
    from labcore.runtime import engine
    with engine.spawn_lock():                # no monitor is spawned meanwhile: its socket is not undone
        report = journal.cleanup(everything=args.all)
    left = engine.dismiss_monitor()          # a monitor that no container and no client keeps leaves now
    if left:
        report = left if report == "nothing left to clean up" else f"{report}\n{left}"
    print(report)
    return 1 if "could not remove" in report else 0
