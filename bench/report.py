"""Stats, the markdown table, targets, JSON and the plot; everything lands in bench/results/ (gitignored)."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per row: n, median, min, max in ms, ratios against crun's and docker run's medians; or its reason."""
    stats = {}
    for row in rows:
        times = [t * 1000 for t in row["times"]]
        if row.get("missing") or not times:
            stats[row["key"]] = {"label": row["label"], "missing": row.get("missing") or "no runs"}
            continue
        stats[row["key"]] = {"label": row["label"], "n": len(times), "median": statistics.median(times),
                             "min": min(times), "max": max(times)}
    for base in ("crun", "docker"):
        reference = stats.get(base, {}).get("median")
        for entry in stats.values():
            if "median" in entry:
                entry[f"x_{base}"] = entry["median"] / reference if reference else None
    return stats


def targets(stats: dict[str, dict]) -> list[dict]:
    """The issue's targets, reported, not asserted: (h) <= crun; (i) <= docker/5; (g) <= python + 30 ms."""
    def median(key):
        return stats.get(key, {}).get("median")

    checks = [("api", "crun", "(h) labcore API ≤ crun", lambda m: m),
              ("sdk", "docker", "(i) SDK → labd ≤ 1/5 of docker run", lambda m: m / 5),
              ("cli", "python", "(g) labcore run ≤ python3 -c pass + 30 ms", lambda m: m + 30),
              ("cli_labd", "python", "(g2) labcore run, labd running ≤ python3 -c pass + 30 ms", lambda m: m + 30)]
    found = []
    for key, base, text, limit_of in checks:
        if median(key) is None or median(base) is None:
            missing = key if median(key) is None else base
            found.append({"target": text, "met": None,
                          "detail": f"{missing}: {stats.get(missing, {}).get('missing', 'missing')}"})
            continue
        limit = limit_of(median(base))
        gap = median(key) - limit
        found.append({"target": text, "met": gap <= 0, "limit_ms": limit, "value_ms": median(key),
                      "detail": f"{median(key):.1f} ms vs limit {limit:.1f} ms "
                                f"({'met' if gap <= 0 else 'not met'}, {abs(gap):.1f} ms "
                                f"{'to spare' if gap <= 0 else 'over'})"})
    return found


def _ms(value) -> str:
    return f"{value:.1f}" if value is not None else "–"


def _ratio(value) -> str:
    return f"{value:.2f}×" if value is not None else "–"


def table(stats: dict[str, dict]) -> str:
    lines = ["| row | peer | median ms | min ms | max ms | ÷ crun | ÷ docker run |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key, entry in stats.items():
        if "missing" in entry:
            reason = " ".join(entry["missing"].split()).replace("|", "\\|")     # one table cell
            lines.append(f"| {key} | {entry['label']} | missing: {reason} | | | | |")
        else:
            lines.append(f"| {key} | {entry['label']} | {_ms(entry['median'])} | {_ms(entry['min'])} | "
                         f"{_ms(entry['max'])} | {_ratio(entry['x_crun'])} | {_ratio(entry['x_docker'])} |")
    return "\n".join(lines)


def target_lines(found: list[dict]) -> str:
    mark = {True: "met", False: "NOT MET", None: "not measured"}
    return "\n".join(f"- {t['target']}: **{mark[t['met']]}** — {' '.join(t['detail'].split())}" for t in found)


def markdown(header: str, stats: dict[str, dict], found: list[dict], leaks: list[str]) -> str:
    return "\n\n".join([header, table(stats), "Targets (reported, not asserted):\n" + target_lines(found),
                        "Left behind: " + ("; ".join(leaks) or "nothing")])


def save(name: str, document: dict, markdown: str | None = None, plot=None) -> Path:
    """bench/results/<date>[-name].json, and for the side-by-side run latest.md and a PNG."""
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    stem = stamp + (f"-{name}" if name else "")
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    if markdown is not None:
        (RESULTS / f"latest{'-' + name if name else ''}.md").write_text(markdown + "\n")
    if plot is not None:
        plot(RESULTS / f"{stem}.png")
    return path


def plot(stats: dict[str, dict], rows: list[dict], path: Path) -> None:
    """One dot per run on a log scale, the median as a bar: the spread shows, not only the centre."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    measured = [r for r in rows if "median" in stats[r["key"]]]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(measured) + 1.2))
    for y, row in enumerate(reversed(measured)):
        entry = stats[row["key"]]
        ax.barh(y, entry["median"], color="#9ecae1")
        ax.plot([t * 1000 for t in row["times"]], [y] * len(row["times"]), "|", color="#08519c", alpha=0.6)
        ax.text(entry["max"] * 1.1, y, f"{entry['median']:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(measured)), [r["label"] for r in reversed(measured)], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=3 * max(stats[r["key"]]["max"] for r in measured))     # room for the labels
    ax.set_xlabel("ms per run (log scale); bar = median, ticks = each run")
    ax.set_title("Starting /bin/true on the same busybox rootfs, interleaved runs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
