"""Docker's human units (its go-units package): "About a minute", "4.26MB".

`docker ps` and `docker images` print durations and sizes in these words; the lab prints the same, so that
its output reads like Docker's and can be compared with it line by line.
"""
from __future__ import annotations


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: the words `docker images` puts before "ago"."""
    hours = int(seconds / 3600 + 0.5)
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    if seconds < 3600:
        return "About a minute" if int(seconds // 60) == 1 else f"{int(seconds // 60)} minutes"
    if hours == 1:
        return "About an hour"
    for limit, unit, divisor in ((48, "hours", 1), (24 * 14, "days", 24), (24 * 60, "weeks", 24 * 7),
                                 (24 * 730, "months", 24 * 30)):
        if hours < limit:
            return f"{hours // divisor} {unit}"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units, ``precision`` significant digits. `docker images`
    uses 3 ("4.26MB"); pull progress uses HumanSize, which is 4 ("816.1kB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    index = 0
    while size >= 1000 and index < len(units) - 1:
        size /= 1000
        index += 1
    return f"{size:.{precision}g}{units[index]}"
