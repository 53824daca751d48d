import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.data.episodes import EpisodeSampler, check_class_sizes, check_ways, rotate_classes, split_classes
from workbench.data.glyphs import draw_glyphs
from workbench.data.images import ImageFolder
from workbench.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WORKBENCH_DATA", "../shared/data"))
OMNIGLOT_SMALL1 = (DATA if DATA.is_absolute() else REPO / DATA) / "omniglot" / "images_background_small1.zip"


def tagged_classes(counts: list[int], size: int = 4) -> list[np.ndarray]:
    """Images whose pixel [0, 0] holds the class index and pixel [0, 1] the image index."""
    classes = []
    for class_index, count in enumerate(counts):
        images = np.zeros((count, size, size, 1), np.uint8)
        images[:, 0, 0, 0] = class_index
        images[:, 0, 1, 0] = np.arange(count)
        classes.append(images)
    return classes


def identities(x: np.ndarray) -> np.ndarray:
    """(class, image) of each example in float episodes of tagged images: [..., 2]."""
    return np.rint(x[..., 0, :2, 0]).astype(int)


# split_classes


def test_split_by_class_fractions():
    names = [f"c{i:03d}" for i in range(100)]
    split = split_classes(names, validation=0.1, test=0.2, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (70, 10, 20)
    assert not split.by_group
    assert sorted(split.train + split.validation + split.test) == names
    assert list(split.train) == sorted(split.train)  # input order is kept


def test_split_by_group_keeps_each_group_in_one_split():
    sizes = {"A": 10, "B": 14, "C": 20, "D": 8, "E": 30, "F": 18}
    groups = [group for group, size in sizes.items() for _ in range(size)]
    names = [f"{group}/{i}" for i, group in enumerate(groups)]
    split = split_classes(names, groups, validation=0.1, test=0.2, seed=3)
    assert split.by_group
    group_of = dict(zip(names, groups, strict=True))
    seen = [{group_of[name] for name in part} for part in (split.train, split.validation, split.test)]
    assert all(seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_split_is_deterministic_from_the_seed():
    names = [str(i) for i in range(50)]
    assert split_classes(names, seed=4) == split_classes(names, seed=4)
    assert len({split_classes(names, seed=seed).test for seed in range(5)}) > 1


def test_split_falls_back_to_classes_when_groups_are_too_few():
    names = [f"c{i}" for i in range(20)]
    split = split_classes(names, ["x"] * 10 + ["y"] * 10, validation=0.1, test=0.2)
    assert not split.by_group
    assert (len(split.train), len(split.validation), len(split.test)) == (14, 2, 4)
    # Two groups are enough when only one held-out split is asked for.
    assert split_classes(names, ["x"] * 10 + ["y"] * 10, validation=0.0, test=0.2).by_group


@given(
    group_sizes=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    validation=st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    test=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
    use_groups=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_split_properties(group_sizes, validation, test, use_groups, seed):
    groups = [f"g{g}" for g, size in enumerate(group_sizes) for _ in range(size)]
    names = [f"{group}/{i}" for i, group in enumerate(groups)]
    needed = 1 + (validation > 0) + (test > 0)
    if len(names) < needed:
        with pytest.raises(DataError, match="at least"):
            split_classes(names, groups if use_groups else None, validation, test, seed)
        return
    split = split_classes(names, groups if use_groups else None, validation, test, seed)
    parts = (split.train, split.validation, split.test)
    assert sorted(sum(parts, ())) == sorted(names)  # disjoint and complete
    assert split.train
    assert bool(split.validation) == (validation > 0)
    assert bool(split.test) == (test > 0)
    if split.by_group:
        group_of = dict(zip(names, groups, strict=True))
        owners = {}
        for index, part in enumerate(parts):
            for name in part:
                assert owners.setdefault(group_of[name], index) == index


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"validation": 1.0}, "validation"),
        ({"test": -0.1}, "test"),
        ({"validation": 0.5, "test": 0.5}, "sum below 1"),
        ({"groups": ["a"]}, "one group per class"),
    ],
)
def test_split_errors(kwargs, message):
    with pytest.raises(DataError, match=message):
        split_classes(["a", "b", "c", "d"], **kwargs)


def test_split_rejects_duplicates_and_too_few_classes():
    with pytest.raises(DataError, match="unique"):
        split_classes(["a", "a", "b"])
    with pytest.raises(DataError, match="at least 3 classes"):
        split_classes(["a", "b"])


# rotate_classes


def test_rotations_make_new_classes_in_class_major_order():
    classes = [np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1) + 50 * i for i in range(2)]
    rotated = rotate_classes(classes, [0, 90, 180, 270])
    assert len(rotated) == 8
    for i, images in enumerate(classes):
        for j, turns in enumerate(range(4)):
            np.testing.assert_array_equal(rotated[4 * i + j], np.rot90(images, turns, axes=(1, 2)))


def test_rotation_errors():
    square = [np.zeros((1, 4, 4, 1), np.uint8)]
    with pytest.raises(DataError, match="multiples of 90"):
        rotate_classes(square, [0, 45])
    with pytest.raises(DataError, match="distinct"):
        rotate_classes(square, [0, 360])
    with pytest.raises(DataError, match="square"):
        rotate_classes([np.zeros((1, 4, 5, 1), np.uint8)], [0, 90])
    assert rotate_classes([np.zeros((1, 4, 5, 1), np.uint8)], [0, 180])[1].shape == (1, 4, 5, 1)


# EpisodeSampler


def test_episode_shapes_dtypes_and_range():
    sampler = EpisodeSampler(tagged_classes([6] * 8, size=5), ways=3, shots=2, queries=4, seed=0)
    episodes = sampler.sample(7)
    assert episodes.support_x.shape == (7, 6, 5, 5, 1)
    assert episodes.query_x.shape == (7, 12, 5, 5, 1)
    assert episodes.support_x.dtype == episodes.query_x.dtype == np.float32
    assert episodes.support_y.dtype == episodes.query_y.dtype == np.int32
    assert 0.0 <= episodes.support_x.min() and episodes.query_x.max() <= 255.0
    np.testing.assert_array_equal(episodes.support_y, np.tile([0, 0, 1, 1, 2, 2], (7, 1)))
    np.testing.assert_array_equal(episodes.query_y, np.tile(np.repeat([0, 1, 2], 4), (7, 1)))


def test_each_label_is_one_class_with_distinct_images_and_labels_are_remapped():
    ways, shots, queries = 5, 1, 3
    sampler = EpisodeSampler(tagged_classes([4, 5, 6, 7, 8, 9, 10]), ways, shots, queries, seed=1)
    episodes = sampler.sample(40)
    support, query = identities(episodes.support_x), identities(episodes.query_x)
    labels_of_class_0 = set()
    for task in range(40):
        classes_by_label = []
        for label in range(ways):
            examples = np.concatenate([support[task][episodes.support_y[task] == label], query[task][episodes.query_y[task] == label]])
            assert len(set(examples[:, 0])) == 1  # one class per label
            assert len({tuple(e) for e in examples}) == shots + queries  # no image twice
            classes_by_label.append(examples[0, 0])
        assert len(set(classes_by_label)) == ways
        if 0 in classes_by_label:
            labels_of_class_0.add(classes_by_label.index(0))
    assert len(labels_of_class_0) > 1  # a class does not keep one label across tasks


def test_sampling_is_deterministic_from_the_seed():
    classes = tagged_classes([5] * 10)
    first = EpisodeSampler(classes, 4, 1, 2, seed=7)
    second = EpisodeSampler(classes, 4, 1, 2, seed=7)
    for _ in range(2):
        a, b = first.sample(3), second.sample(3)
        np.testing.assert_array_equal(a.support_x, b.support_x)
        np.testing.assert_array_equal(a.query_x, b.query_x)
    other = EpisodeSampler(classes, 4, 1, 2, seed=8).sample(3)
    assert not np.array_equal(first.sample(3).query_x, other.query_x)


def test_fixed_tasks_are_the_same_every_time_and_come_in_chunks():
    sampler = EpisodeSampler(tagged_classes([6] * 10), ways=5, shots=1, queries=2, seed=0)
    chunks = list(sampler.fixed_tasks(25, seed=3, chunk_size=10))
    assert [len(chunk.support_x) for chunk in chunks] == [10, 10, 5]
    sampler.sample(4)  # drawing training tasks does not move the evaluation set
    whole = next(sampler.fixed_tasks(25, seed=3, chunk_size=25))
    np.testing.assert_array_equal(np.concatenate([c.support_x for c in chunks]), whole.support_x)
    np.testing.assert_array_equal(np.concatenate([c.query_x for c in chunks]), whole.query_x)
    other = next(sampler.fixed_tasks(25, seed=4, chunk_size=25))
    assert not np.array_equal(whole.query_x, other.query_x)


def test_sampler_errors_name_the_problem():
    with pytest.raises(DataError, match="5-way tasks need at least 5 classes, but there are 3"):
        EpisodeSampler(tagged_classes([9, 9, 9]), ways=5, shots=1, queries=1)
    with pytest.raises(DataError, match="Class 'b' has 3 images.*shots \\+ queries = 4"):
        EpisodeSampler(tagged_classes([9, 3, 9]), ways=2, shots=1, queries=3, class_names=["a", "b", "c"])
    with pytest.raises(DataError, match="uint8"):
        EpisodeSampler([np.zeros((4, 2, 2, 1), np.float32)] * 2, ways=2, shots=1, queries=1)
    with pytest.raises(DataError, match="shots"):
        EpisodeSampler(tagged_classes([9, 9]), ways=2, shots=0, queries=1)
    sampler = EpisodeSampler(tagged_classes([9, 9]), ways=2, shots=1, queries=1)
    with pytest.raises(DataError, match="batch_size"):
        sampler.sample(0)
    with pytest.raises(DataError, match="count"):
        sampler.fixed_tasks(0)


def test_class_checks_name_the_split_and_serve_listings_too():
    with pytest.raises(DataError, match="^meta-test: 5-way tasks need at least 5 classes, but there are 3"):
        EpisodeSampler(tagged_classes([9, 9, 9]), ways=5, shots=1, queries=1, split="meta-test")
    with pytest.raises(DataError, match=r"^Class 'b' has 3 images \(meta-train\), but 1-shot tasks with 3 queries"):
        check_class_sizes({"a": 9, "b": 3, "c": 2}, shots=1, queries=3, split="meta-train")
    check_ways(5, ways=5)
    check_class_sizes({"a": 4}, shots=1, queries=3)


def test_glyph_episodes():
    images, _ = draw_glyphs(range(12), per_class=6, image_size=(16, 16))
    sampler = EpisodeSampler(list(images.reshape(12, 6, 16, 16, 1)), ways=5, shots=1, queries=5, seed=0)
    episodes = sampler.sample(2)
    assert episodes.query_x.shape == (2, 25, 16, 16, 1)
    assert episodes.support_x.max() == 255.0


@pytest.mark.skipif(not OMNIGLOT_SMALL1.exists(), reason=f"Omniglot not found at {OMNIGLOT_SMALL1}")
def test_omniglot_protocol_split_load_rotate_sample():
    folder = ImageFolder.open(OMNIGLOT_SMALL1)
    split = split_classes(folder.classes, folder.groups, validation=0.1, test=0.2, seed=0)
    assert split.by_group
    group_of = dict(zip(folder.classes, folder.groups, strict=True))
    assert not {group_of[c] for c in split.train} & {group_of[c] for c in split.test}
    loaded = folder.load(split.test, image_size=(28, 28))
    classes = rotate_classes(loaded.by_class(), [0, 90, 180, 270])
    assert len(classes) == 4 * len(split.test)
    sampler = EpisodeSampler(classes, ways=20, shots=1, queries=5, seed=0)
    episodes = next(sampler.fixed_tasks(600, seed=0, chunk_size=16))
    assert episodes.support_x.shape == (16, 20, 28, 28, 1)
