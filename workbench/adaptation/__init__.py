"""Adapting finished runs to new tasks: per-task scoring of fixed episodes, and `workbench adapt`.

    scorer = episode_scorer(run, AdaptSettings("head", learning_rate=0.01))
    accuracy = scorer.score(episodes, steps=[0, 1, 5])  # {steps: per-task accuracy [B]}

Importing this package does not import TensorFlow; building a scorer does.
"""

from workbench.adaptation.scorer import EpisodeScorer, episode_scorer
from workbench.adaptation.settings import AdaptSettings

__all__ = ["AdaptSettings", "EpisodeScorer", "episode_scorer"]
