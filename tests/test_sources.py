"""One layer turns every image source into classes of images, with one pixel conversion.

TFDS is served by `tfds.testing.mock_data` with the test's own pictures, so that the
same picture can be read from a folder and from a dataset and compared.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from workbench.data.datasets import load_image_splits
from workbench.data.images import convert_pixels
from workbench.data.sources import ClassImages, glyph_classes
from workbench.errors import DataError
from workbench.meta.tasks import build_tasks
from workbench.recipe.schema import Data, Tasks

# Under mock_data, without its metadata files, cifar10's labels are named "0" to "9".
DATASET = "cifar10"


def pictures(per_class=2, classes=10):
    """Colour pictures of cifar10's shape, `per_class` of each class, with labels."""
    rng = np.random.default_rng(7)
    labels = np.tile(np.arange(classes), per_class)
    return rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels


def serve(images, labels):
    """TFDS mocked to serve these pictures as every split of any dataset."""

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({"id": [str(i) for i in range(len(labels))], "image": images, "label": labels})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def save_folder(root, images, labels):
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{index:03d}.png")  # files sort in dataset order
    return root


def examples(dataset):
    """Every (image, label) of a pipeline, ordered by label and then by brightness."""
    pairs = [(x, int(y)) for images, labels in dataset for x, y in zip(images.numpy(), labels.numpy(), strict=True)]
    return sorted(pairs, key=lambda pair: (pair[1], float(pair[0].sum())))


def test_transfer_data_from_a_folder_and_from_tfds_have_the_same_pixels(tmp_path):
    images, labels = pictures()
    folder = save_folder(tmp_path / "pictures", images, labels)
    shared = dict(image_size=[20, 24], channels=1, batch_size=8)
    from_folder = load_image_splits(Data(source="folder", path=str(folder), validation=0.0, **shared), seed=0)
    with serve(images, labels):
        from_tfds = load_image_splits(Data(source="tfds", name=DATASET, **shared), seed=0)
    assert from_folder.class_names == from_tfds.class_names == [str(label) for label in range(10)]
    folder_examples, tfds_examples = examples(from_folder.train), examples(from_tfds.train)
    assert len(folder_examples) == len(tfds_examples) == 20
    for (folder_image, folder_label), (tfds_image, tfds_label) in zip(folder_examples, tfds_examples, strict=True):
        assert folder_label == tfds_label and folder_image.shape == (20, 24, 1)
        assert np.abs(folder_image - tfds_image).max() <= 1


def test_meta_tasks_from_a_folder_and_from_tfds_have_the_same_pixels(tmp_path):
    images, labels = pictures()
    folder = save_folder(tmp_path / "pictures", images, labels)
    shared = dict(ways=2, shots=1, queries=1, validation=0.2, test=0.2, image_size=[20, 20])
    from_folder = build_tasks(Tasks(source="folder", path=str(folder), **shared), seed=3)
    with serve(images, labels):
        from_tfds = build_tasks(Tasks(source="tfds", name=DATASET, **shared), seed=3)
    for split, sampler in from_folder.samplers.items():
        assert sampler.class_names == from_tfds.samplers[split].class_names
        # Same classes in the same order and the same seed: the same tasks, pixel for pixel up to rounding.
        folder_tasks = next(sampler.fixed_tasks(8, seed=1))
        tfds_tasks = next(from_tfds.samplers[split].fixed_tasks(8, seed=1))
        assert np.abs(folder_tasks.support_x - tfds_tasks.support_x).max() <= 1
        assert np.abs(folder_tasks.query_x - tfds_tasks.query_x).max() <= 1


def test_grayscale_is_the_itu_r_601_luma_of_pillow_and_tf_image():
    colours = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    luma = colours @ np.array([0.299, 0.587, 0.114])
    gray = convert_pixels(colours, (6, 7), channels=1)
    assert gray.shape == (6, 7, 1) and np.abs(gray[..., 0] - luma).max() <= 0.5 + 1e-3  # rounded to the nearest value
    assert np.abs(gray - tf.image.rgb_to_grayscale(tf.constant(colours, tf.float32)).numpy()).max() <= 1
    np.testing.assert_array_equal(convert_pixels(colours[..., :1], (6, 7), channels=3), np.repeat(colours[..., :1], 3, -1))
    with pytest.raises(DataError, match="uint8 image"):
        convert_pixels(colours.astype(np.float32), (6, 7))


def test_a_tfds_split_with_one_class_is_refused():
    images, labels = pictures(per_class=3, classes=1)
    data = Data(source="tfds", name=DATASET, image_size=[16, 16], channels=1)
    with serve(images, labels), pytest.raises(DataError, match=r"The data hold 1 class \('0'\), but a classifier needs at least 2"):
        load_image_splits(data, seed=0)


def test_class_images_are_class_major_with_names_counts_and_views():
    classes = glyph_classes([4, 2, 9], samples=3, image_size=(12, 12), channels=3, seed=0)
    assert classes.names == ("glyph-4", "glyph-2", "glyph-9") and classes.images.shape == (9, 12, 12, 3)
    assert classes.counts() == {"glyph-4": 3, "glyph-2": 3, "glyph-9": 3}
    nine, four = classes.images_of(["glyph-9", "glyph-4"])
    np.testing.assert_array_equal(nine, classes.images[6:9])
    np.testing.assert_array_equal(four, classes.images[0:3])
    joined = ClassImages.from_classes([nine, np.empty((0, 12, 12, 3), np.uint8), four], ["a", "b", "c"])
    assert joined.counts() == {"a": 3, "b": 0, "c": 3}
    np.testing.assert_array_equal(joined.labels, [0, 0, 0, 2, 2, 2])
