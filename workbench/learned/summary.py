"""A learned-optimizer run in a few lines: its loss against each tuned baseline, and its plan."""

from __future__ import annotations


def _figure(entry: dict) -> str:
    if entry.get("mean") is None:
        return f"diverged on {entry.get('diverged', '?')} of {entry['tasks']} optimizees"
    return f"{entry['mean']:.4g} ± {entry['ci95']:.2g}"


def format_learned_result(metrics: dict) -> str:
    """`loss after 100 steps (100 optimizees): learned 0.12 ± 0.01; adam (lr 0.1) 0.3 ± 0.02; ...` per reported step count."""
    lines = []
    for index, entry in enumerate(metrics["evaluation"]):
        figures = [f"learned {_figure(entry)}"]
        for name, baseline in metrics.get("baselines", {}).items():
            figures.append(f"{name} (lr {baseline['learning_rate']:g}) {_figure(baseline['evaluation'][index])}")
        lines.append(f"{metrics['metric']} after {entry['steps']} steps ({entry['tasks']} held-out optimizees): " + "; ".join(figures))
    return "\n".join(lines)


def describe_learned_plan(recipe) -> str:
    """What `workbench validate --plan` says of a learned-optimizer recipe: optimizees, network, horizon, evaluation."""
    tasks, net, inner, outer, evaluation = recipe.tasks, recipe.optimizer_net, recipe.inner, recipe.outer, recipe.evaluation
    if tasks.source == "quadratic":
        optimizees = f"{tasks.dimensions}-d quadratics ||Wx - y||^2"
    else:
        height, width = tasks.image_size
        hidden = "-".join(str(units) for units in tasks.hidden)
        optimizees = f"MLP {height * width}-{hidden}-{tasks.classes} ({tasks.activation}) on {tasks.name}, batch {tasks.batch_size}"
    return "\n".join(
        [
            f"  optimizees: {optimizees}, {tasks.optimizees} per iteration",
            f"  optimizer net: {net.layers} coordinatewise LSTM layers of {net.units} units, preprocessing p = {net.preprocessing_p:g}",
            f"  training: horizons of {inner.steps} steps in unrolls of {inner.unroll}; {outer.optimizer} at {outer.learning_rate:g}, "
            f"{outer.iterations:,} iterations",
            f"  evaluation: {evaluation.tasks} held-out optimizees, steps {evaluation.steps}, against {', '.join(evaluation.baselines)}",
        ]
    )


def refuse_learned_optimizer_run(path, command: str) -> None:
    """Raise `RunError` when `path` is the run directory of a learned optimizer, which `command` cannot take."""
    from pathlib import Path

    from workbench import runs
    from workbench.errors import RunError

    path = Path(path)
    if not (path / runs.MANIFEST_FILE).is_file() or runs.Run(path).manifest.get("kind") != "meta":
        return
    if getattr(runs.Run(path).load_recipe(), "algorithm", None) == "learned_optimizer":
        raise RunError(
            f"{path}: a learned optimizer, which {command} cannot take (it classifies nothing, and its figures are in its "
            f"{runs.METRICS_FILE}); train with it in a transfer phase: optimizer: {{learned: RUN}}"
        )
