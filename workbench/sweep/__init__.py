"""Sweeps: Optuna searches over the fields of a transfer or meta recipe, each trial an ordinary run.

The modules import neither TensorFlow nor Optuna at the top, so that validating
a sweep recipe stays fast: `checks` (a sweep against the recipe it tunes),
`space` (distributions and `--set` overrides), `objective` (the figure a trial
scores), `study` (storage and study), `warm_start`, `pruning`, `record`
(sweep.json) and `worker` (the trial loop).
"""
