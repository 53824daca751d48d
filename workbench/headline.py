"""The result of a finished run in a few lines, as `workbench run` and `workbench resume` print it."""

from __future__ import annotations

import json
from pathlib import Path

from workbench import runs


def headline(run_path: Path) -> str:
    """Test accuracy beside the scratch baseline (transfer), the meta-test table (meta), or the comparison's table (compare)."""
    run = runs.Run(run_path)
    if run.file(runs.COMPARE_FILE).is_file():
        from workbench.compare.table import format_table

        return format_table(json.loads(run.file(runs.COMPARE_FILE).read_text()))
    metrics = json.loads(run.file(runs.METRICS_FILE).read_text())
    if "evaluation" in metrics:
        from workbench.evaluation import format_meta_result

        return "\n".join(f"meta-test {format_meta_result(metrics['metric'], entry)}" for entry in metrics["evaluation"])
    lines = []
    for phase in metrics["phases"]:
        kept = f", kept epoch {phase['best_epoch']} by {phase['monitor']}" if phase.get("best_epoch") else ""
        validation = f": validation accuracy {phase['val_accuracy']:.1%}" if "val_accuracy" in phase else ""
        lines.append(f"phase {phase['name']} ({phase['epochs']} epochs{kept}){validation}")
    if "test" in metrics:
        test = metrics["test"]
        line = f"test accuracy {test['accuracy']:.1%} on {test['examples']} examples"
        scratch = metrics.get("baseline", {}).get("scratch", {}).get("test")
        if scratch:
            line += f"; the same network from scratch: {scratch['accuracy']:.1%}"
        lines.append(line)
    return "\n".join(lines)
