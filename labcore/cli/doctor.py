"""`labcore doctor`: what this host lets the lab do, each answer found by trying it (`--json` for scripts)."""
import json

from labcore.lessons import doctor


def configure(parser):
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    report = doctor.check()
    print(json.dumps(report.to_json(), indent=2) if args.json else f"{report}\n\n{report.in_one_line()}")
    return 0
