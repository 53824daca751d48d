import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data.episodes_types import Episodes
from workbench.data.sinusoid import SinusoidTasks


def _fit_sinusoid(x, y):
    """Least-squares (a, b) of y = a*sin(x) + b*cos(x), one task."""
    design = np.stack([np.sin(x), np.cos(x)], axis=-1)
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    return coefficients


def test_shapes_dtypes_and_ranges():
    episodes = SinusoidTasks(shots=5, queries=7, seed=0).sample(200)
    assert isinstance(episodes, Episodes)
    assert episodes.num_tasks == 200
    assert episodes.support_x.shape == (200, 5, 1)
    assert episodes.support_y.shape == (200, 5, 1)
    assert episodes.query_x.shape == (200, 7, 1)
    assert episodes.query_y.shape == (200, 7, 1)
    for array in (episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y):
        assert array.dtype == np.float32
    x = np.concatenate([episodes.support_x, episodes.query_x], axis=1)
    y = np.concatenate([episodes.support_y, episodes.query_y], axis=1)
    assert x.min() >= -5.0 and x.max() <= 5.0
    assert x.min() < -4.5 and x.max() > 4.5  # the whole range is used
    assert np.abs(y).max() <= 5.0


def test_support_and_query_come_from_one_sinusoid_with_paper_ranges():
    episodes = SinusoidTasks(shots=5, queries=10, seed=3).sample(100)
    amplitudes, phases = [], []
    for task in range(100):
        sx = episodes.support_x[task, :, 0].astype(np.float64)
        sy = episodes.support_y[task, :, 0].astype(np.float64)
        a, b = _fit_sinusoid(sx, sy)
        # y = A sin(x - phase) = A cos(phase) sin(x) - A sin(phase) cos(x)
        amplitudes.append(np.hypot(a, b))
        phases.append(np.arctan2(-b, a))
        qx = episodes.query_x[task, :, 0].astype(np.float64)
        prediction = a * np.sin(qx) + b * np.cos(qx)
        np.testing.assert_allclose(prediction, episodes.query_y[task, :, 0], atol=1e-4)
    amplitudes, phases = np.array(amplitudes), np.array(phases)
    assert amplitudes.min() >= 0.1 - 1e-4 and amplitudes.max() <= 5.0 + 1e-4
    assert phases.min() >= -1e-4 and phases.max() <= np.pi + 1e-4
    # Spread over the ranges rather than stuck at one value.
    assert amplitudes.std() > 1.0 and phases.std() > 0.5


def test_deterministic_from_seed():
    first = SinusoidTasks(shots=5, queries=5, seed=42)
    second = SinusoidTasks(shots=5, queries=5, seed=42)
    for _ in range(3):
        a, b = first.sample(4), second.sample(4)
        np.testing.assert_array_equal(a.support_x, b.support_x)
        np.testing.assert_array_equal(a.query_y, b.query_y)
    other = SinusoidTasks(shots=5, queries=5, seed=43).sample(4)
    assert not np.array_equal(other.support_x, first.sample(4).support_x)


def test_the_stream_advances_and_a_seeded_sample_is_fixed():
    tasks = SinusoidTasks(shots=5, queries=5, seed=0)
    fixed = tasks.sample(8, seed=123)
    first, second = tasks.sample(8), tasks.sample(8)
    assert not np.array_equal(first.support_x, second.support_x)
    again = tasks.sample(8, seed=123)
    np.testing.assert_array_equal(fixed.support_x, again.support_x)
    np.testing.assert_array_equal(fixed.query_y, again.query_y)
    # A seeded sample leaves the training stream where it was.
    reference = SinusoidTasks(shots=5, queries=5, seed=0)
    reference.sample(8), reference.sample(8)
    np.testing.assert_array_equal(tasks.sample(8).support_x, reference.sample(8).support_x)


@settings(max_examples=25, deadline=None)
@given(
    shots=st.integers(1, 20),
    queries=st.integers(1, 20),
    batch=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_sizes(shots, queries, batch, seed):
    episodes = SinusoidTasks(shots, queries, seed).sample(batch)
    assert episodes.support_x.shape == (batch, shots, 1)
    assert episodes.query_y.shape == (batch, queries, 1)
    assert np.all(np.isfinite(episodes.query_y))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shots=0, queries=5), "shots"),
        (dict(shots=5, queries=-1), "queries"),
        (dict(shots=2.5, queries=5), "shots"),
        (dict(shots=5, queries=5, amplitude_range=(5.0, 0.1)), "amplitude_range"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SinusoidTasks(seed=0, **kwargs)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        SinusoidTasks(5, 5, seed=0).sample(0)


def test_episodes_checks_shapes_and_takes_tasks():
    x = np.zeros((3, 5, 1), np.float32)
    with pytest.raises(ValueError, match="same number of tasks"):
        Episodes(x, x, x[:2], x[:2])
    with pytest.raises(ValueError, match="same number of examples"):
        Episodes(x, x[:, :4], x, x)
    episodes = SinusoidTasks(5, 5, seed=0).sample(6)
    part = episodes.take(slice(2, 4))
    assert part.num_tasks == 2
    np.testing.assert_array_equal(part.query_x, episodes.query_x[2:4])
