"""The schedules of domain-adversarial training, as pure functions of the training progress.

Y. Ganin, E. Ustinova, H. Ajakan, P. Germain, H. Larochelle, F. Laviolette,
M. Marchand and V. Lempitsky, "Domain-Adversarial Training of Neural Networks",
JMLR 17(59), 2016 (and Ganin & Lempitsky, ICML 2015). `progress` p is the fraction
of training done, from 0 at the first step to 1 at the last.

- The gradient reversal weight starts at 0, so that the domain classifier's noisy
  early gradients do not disturb the features, and rises towards 1:
  lambda_p = 2 / (1 + exp(-gamma p)) - 1, with gamma = 10.
- The learning rate anneals as mu_p = mu_0 / (1 + alpha p)^beta, with alpha = 10
  and beta = 0.75 (mu_0 = 0.01 in the paper).
"""

import math
from numbers import Real

from workbench.errors import ArgumentError

__all__ = ["REVERSAL_GAMMA", "ANNEALING_ALPHA", "ANNEALING_BETA", "reversal_weight", "annealed_learning_rate"]

REVERSAL_GAMMA = 10.0
ANNEALING_ALPHA = 10.0
ANNEALING_BETA = 0.75


def reversal_weight(progress: float, gamma: float = REVERSAL_GAMMA) -> float:
    """lambda_p = 2 / (1 + exp(-gamma p)) - 1: 0 at p = 0, about 0.987 at p = 0.5 and 0.99991 at p = 1 (gamma 10)."""
    progress = _check_progress(progress)
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def annealed_learning_rate(initial: float, progress: float, alpha: float = ANNEALING_ALPHA, beta: float = ANNEALING_BETA) -> float:
    """mu_p = mu_0 / (1 + alpha p)^beta: `initial` at p = 0, `initial` / 11^0.75 (about 0.166 of it) at p = 1."""
    progress = _check_progress(progress)
    return initial / (1.0 + alpha * progress) ** beta


def _check_progress(progress: float) -> float:
    if isinstance(progress, bool) or not isinstance(progress, Real) or not 0.0 <= progress <= 1.0:
        raise ArgumentError(
            f"The training progress must be a number from 0 (first step) to 1 (last step), e.g. step / total_steps. "
            f"Received: progress={progress!r}"
        )
    return float(progress)
