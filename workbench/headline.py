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
    if "baselines" in metrics and "evaluation" in metrics:  # a learned optimizer against hand-designed ones
        from workbench.learned.summary import format_learned_result

        return format_learned_result(metrics)
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
    for name, figures in metrics.get("heads", {}).items():
        lines.append(f"head {name}: test accuracy {figures['test']['accuracy']:.1%}")
    if "domain" in metrics:
        domain = metrics["domain"]
        distance = domain["a_distance"]
        lines.append(
            f"domain ({domain['method']}): target accuracy {domain['target']['accuracy']:.1%} on {domain['target']['examples']} examples; "
            f"proxy A-distance {distance['before']:.2f} before training, {distance['after']:.2f} after"
        )
    return "\n".join(lines)
