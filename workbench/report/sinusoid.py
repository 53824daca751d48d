"""The MAML paper's figure 2 for a sinusoid run: a few test tasks, fitted before and after 1 and 10 adaptation steps.

The only figure that needs the model: TensorFlow is imported here, on demand.
Adaptation goes through the run's own learner (`load_learner`), so it uses the
run's inner learning rate, algorithm and learned rates exactly as meta-testing does.
"""

from __future__ import annotations

import numpy as np

from workbench import runs
from workbench.data.sinusoid import AMPLITUDE_RANGE, INPUT_RANGE, PHASE_RANGE
from workbench.report import plotting
from workbench.report.content import Note, Picture
from workbench.report.run_files import RunFiles

TASKS = 3
STEPS = (0, 1, 10)
TASK_SEED = 2017  # the same tasks in every report, whatever the run's seed
STEP_STYLES = {0: ("#2a9d55", ":", "before adaptation"), 1: ("#7fb3e6", "--", "after 1 step"), 10: ("#1f4e8c", "-", "after 10 steps")}


def _tasks(shots: int) -> list[tuple[float, float, np.ndarray]]:
    """`(amplitude, phase, support inputs)` of the figure's tasks, drawn as the paper's task distribution draws them."""
    rng = np.random.default_rng(TASK_SEED)
    return [(rng.uniform(*AMPLITUDE_RANGE), rng.uniform(*PHASE_RANGE), rng.uniform(*INPUT_RANGE, size=shots)) for _ in range(TASKS)]


def adaptation_picture(run: RunFiles) -> Picture:
    from workbench.quiet import import_tensorflow

    import_tensorflow()
    from workbench.meta.runner import load_learner

    recipe, _, learner = load_learner(runs.Run(run.path))
    grid = np.linspace(*INPUT_RANGE, 200, dtype=np.float32)
    figure, axes = plotting.new_figure(columns=TASKS, height=3.5)
    for ax, (amplitude, phase, support_x) in zip(axes, _tasks(recipe.tasks.shots), strict=True):
        support_y = amplitude * np.sin(support_x - phase)
        ax.plot(grid, amplitude * np.sin(grid - phase), color="#c8382c", linewidth=2, label="truth")
        for steps in STEPS:
            adapted = learner.adapt(support_x[:, None].astype(np.float32), support_y[:, None].astype(np.float32), steps)
            colour, line, label = STEP_STYLES[steps]
            ax.plot(
                grid, np.asarray(adapted(grid[:, None], training=False))[:, 0], color=colour, linestyle=line, linewidth=1.6, label=label
            )
        ax.plot(support_x, support_y, linestyle="none", marker="^", markersize=7, color="#1d232a", label=f"{len(support_x)} support points")
        ax.set_title(f"amplitude {amplitude:.2f}, phase {phase:.2f}", fontsize=9)
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    caption = (
        f"Three sinusoid tasks (fixed, the same in every report), {recipe.tasks.shots} support points each: the meta-learned model "
        f"before adaptation and after 1 and 10 gradient steps on the support points at the run's inner learning rate "
        f"({recipe.inner.learning_rate:g}), against the true curve (the MAML paper's figure 2)."
    )
    return plotting.picture(
        figure, "sinusoid", "Adapting to new sinusoids", caption, "three sinusoid tasks fitted before and after 1 and 10 steps"
    )


def adaptation_item(run: RunFiles, progress=None) -> Picture | Note:
    """The figure, or why it is missing: it needs the finished run's model."""
    if not (run.path / runs.MODEL_FILE).is_file():
        return Note(
            f"The sinusoid adaptation figure needs the run's {runs.MODEL_FILE}, written when meta-training ends; this run is {run.summary.status}."
        )
    if progress:
        progress(f"{run.name}: adapting its model to {TASKS} sinusoid tasks (imports TensorFlow)")
    return adaptation_picture(run)
