"""The table of a comparison, as `workbench run` prints it and the README shows it."""

from __future__ import annotations

HEADER = ("entrant", "kind", "method", "steps", "{metric}", "adapt ms/task", "training CPU s", "parameters")


def format_table(contents: dict) -> str:
    """One row per entrant and step count, in Markdown: mean ± 95% interval, adaptation time, training cost, size."""
    metric = contents["metric"]
    header = [column.format(metric=metric) for column in HEADER]
    rows = []
    for entrant in contents["entrants"]:
        for entry in entrant.get("evaluation", []):
            cpu = entrant.get("training_cpu_seconds")
            rows.append(
                [
                    entrant["name"],
                    entrant["kind"],
                    entrant["method"],
                    str(entry["steps"]),
                    _score(metric, entry),
                    f"{1000 * entry['adapt_seconds_per_task']:.1f}",
                    "not recorded" if cpu is None else f"{cpu:,.0f}",
                    f"{entrant['parameters']:,}",
                ]
            )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    tasks = f"{contents['tasks']} tasks, episodes sha256 {contents['episodes_sha256'][:12]}"
    if not contents.get("complete", True):
        tasks += "; incomplete: `workbench resume` continues it"
    return "\n".join([*lines, tasks])


def _score(metric: str, entry: dict) -> str:
    if metric == "accuracy":
        return f"{entry['mean']:.1%} ± {entry['ci95']:.1%}"
    return f"{entry['mean']:.3f} ± {entry['ci95']:.3f}"
