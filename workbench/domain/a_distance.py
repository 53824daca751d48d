"""The proxy A-distance between two domains, from features of their examples.

S. Ben-David, J. Blitzer, K. Crammer, A. Kulesza, F. Pereira and J. W. Vaughan,
"A theory of learning from different domains", Machine Learning 79, 2010; used as
a measure of adaptation by Ganin et al., "Domain-Adversarial Training of Neural
Networks", JMLR 2016. A classifier learns to tell source from target features on
half of each domain; with its error `err` on the other half, the proxy A-distance
is `2 (1 - 2 err)`: 0 when the domains cannot be told apart, 2 when they can
without error.

The classifier is linear (the papers use a linear SVM): a logistic regression on
standardised features, trained by full-batch gradient descent with a small L2
penalty, from zero weights, so that the only randomness is the seeded choice of
examples and halves, and one seed gives one answer.
"""

import numpy as np

from workbench.errors import ArgumentError

__all__ = ["proxy_a_distance", "domain_classifier_error"]

MIN_PER_DOMAIN = 4  # two to train on and two to test on
_STEPS = 500
_L2 = 1e-3
_STD_FLOOR = 1e-6  # features constant on the training half stay constant, not infinite


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """`2 (1 - 2 err)` of a linear domain classifier on held-out features, clipped at 0.

    `source` and `target` are features `[N, ...]` (flattened per example). Each
    domain is cut to the size of the smaller one and split in two equal halves, so
    that both the training and the test set hold as many source as target examples
    and chance error is 0.5. An error above 0.5 (a classifier no better than
    chance, by bad luck on the test half) means the domains are indistinguishable:
    the distance is clipped to 0 rather than reported negative. It cannot exceed 2.

    Raises:
        ArgumentError: for features that are not finite numbers, of different sizes
            per example, or fewer than 4 examples in a domain.
    """
    return max(0.0, 2.0 * (1.0 - 2.0 * domain_classifier_error(source, target, seed)))


def domain_classifier_error(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """The test error of the linear domain classifier of `proxy_a_distance`, in [0, 1]."""
    source, target = _features("source", source), _features("target", target)
    if source.shape[1] != target.shape[1]:
        raise ArgumentError(
            f"Source and target features must have the same size per example, e.g. the outputs of one base. "
            f"Received: source features of size {source.shape[1]}, target features of size {target.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    half = min(len(source), len(target)) // 2
    source, target = source[rng.permutation(len(source))], target[rng.permutation(len(target))]
    train = np.concatenate([source[:half], target[:half]])
    test = np.concatenate([source[half : 2 * half], target[half : 2 * half]])
    is_target = np.repeat([0.0, 1.0], half)

    mean, std = train.mean(axis=0), np.maximum(train.std(axis=0), _STD_FLOOR)
    train, test = (train - mean) / std, (test - mean) / std
    weights, bias = _fit_logistic_regression(train, is_target)
    predicted = (test @ weights + bias) > 0.0
    return float(np.mean(predicted != is_target.astype(bool)))


def _fit_logistic_regression(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    # A step of 1 / L, with L the Lipschitz constant of the loss's gradient, descends
    # without diverging whatever the features' scale and correlations.
    count = len(features)
    lipschitz = 0.25 * (np.linalg.norm(features, ord=2) ** 2 + count) / count + _L2
    step = 1.0 / lipschitz
    weights, bias = np.zeros(features.shape[1]), 0.0
    for _ in range(_STEPS):
        logits = np.clip(features @ weights + bias, -30.0, 30.0)
        residual = 1.0 / (1.0 + np.exp(-logits)) - labels
        weights -= step * (features.T @ residual / count + _L2 * weights)
        bias -= step * float(residual.mean())
    return weights, bias


def _features(name: str, features: np.ndarray) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim < 2 or not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
        raise ArgumentError(
            f"The {name} features must be a real array [examples, ...]. Received: {name} of {features.dtype} {features.shape}"
        )
    if len(features) < MIN_PER_DOMAIN:
        raise ArgumentError(
            f"The proxy A-distance needs at least {MIN_PER_DOMAIN} {name} examples (half to train, half to test on). "
            f"Received: {len(features)} {name} examples"
        )
    features = features.reshape(len(features), -1).astype(np.float64)
    if not np.all(np.isfinite(features)):
        raise ArgumentError(f"The {name} features hold NaN or infinite values. Received: {name} of shape {features.shape}")
    return features
