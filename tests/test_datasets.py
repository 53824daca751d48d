"""Transfer data sources as tf.data: TFDS (served by tfds.testing.mock_data: no downloads here), folders and zips, glyphs."""

import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from workbench.data.datasets import load_image_splits, split_per_class
from workbench.errors import DataError, ModelError
from workbench.models.bases import build_backbone
from workbench.recipe.schema import Base, Data


def test_split_per_class_is_stratified_disjoint_and_capped():
    labels = np.repeat(np.arange(4), 20)
    train, valid, test = split_per_class(labels, validation=0.25, test=0.25, per_class=3, seed=0)
    assert not set(train) & set(valid) and not set(train) & set(test) and not set(valid) & set(test)
    for label in range(4):
        assert (labels[train] == label).sum() == 3
        assert (labels[valid] == label).sum() == 5 and (labels[test] == label).sum() == 5
    again = split_per_class(labels, validation=0.25, test=0.25, per_class=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again, strict=True))


def test_split_per_class_refuses_classes_too_small_to_split():
    with pytest.raises(DataError, match="too few"):
        split_per_class(np.array([0, 0, 1, 1]), validation=0.5, test=0.5, per_class=None, seed=0)


def test_tfds_source_gives_class_names_and_resized_batches():
    data = Data(
        source="tfds", name="tf_flowers", splits={"train": "train[:80%]", "validation": "train[80%:]"}, image_size=[24, 24], batch_size=4
    )
    with tfds.testing.mock_data(num_examples=10):
        splits = load_image_splits(data, seed=0)
    assert splits.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert splits.image_shape == (24, 24, 3) and splits.counts["train"] == 10 and splits.test is None
    images, labels = next(iter(splits.train))
    assert images.shape == (4, 24, 24, 3) and images.dtype.name == "float32" and labels.shape == (4,)


def _write_folder(root, classes, per_class, mode="L"):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, size=(20, 20, 4 if mode == "RGBA" else 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGBA" if mode == "RGBA" else "RGB").convert(mode).save(root / name / f"{index}.png")


def test_folder_source_reads_zip_archives_and_selects_classes(tmp_path):
    source = tmp_path / "letters"
    _write_folder(source, ["greek/alpha", "greek/beta", "latin/a", "latin/b"], per_class=6, mode="RGBA")
    archive = tmp_path / "letters.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in source.rglob("*.png"):
            zipped.write(path, path.relative_to(tmp_path))
    data = Data(
        source="folder", path=str(archive), include="^latin/", image_size=[16, 16], channels=3, validation=0.2, test=0.2, batch_size=2
    )
    splits = load_image_splits(data, seed=1)
    assert splits.class_names == ["latin/a", "latin/b"]
    assert splits.counts == {"train": 8, "validation": 2, "test": 2}
    images, _ = next(iter(splits.train))
    assert images.shape[1:] == (16, 16, 3) and float(images.numpy().max()) > 1  # raw pixels, not scaled


def test_include_that_keeps_too_few_classes_is_an_error(tmp_path):
    _write_folder(tmp_path / "set", ["a", "b"], per_class=4)
    data = Data(source="folder", path=str(tmp_path / "set"), include="^a$", image_size=[16, 16])
    with pytest.raises(DataError, match="keeps 1 of the 2 classes"):
        load_image_splits(data, seed=0)


def test_glyph_source_draws_the_requested_classes():
    data = Data(
        source="synthetic", name="glyphs", classes=3, first_class=50, samples=10, image_size=[16, 16], channels=1, validation=0.2, test=0.2
    )
    splits = load_image_splits(data, seed=0)
    assert splits.class_names == ["glyph-50", "glyph-51", "glyph-52"] and splits.image_shape == (16, 16, 1)
    assert splits.counts == {"train": 18, "validation": 6, "test": 6}
    without_test = load_image_splits(data.model_copy(update={"test": 0.0, "rotations": [0, 180]}), seed=0)
    assert without_test.counts == {"train": 48, "validation": 12, "test": 0} and without_test.test is None


def _all(pipeline):
    batches = list(pipeline)
    return np.concatenate([x.numpy() for x, _ in batches]), np.concatenate([y.numpy() for _, y in batches])


def test_rotations_are_new_classes_and_an_image_keeps_its_rotations_in_its_split():
    fields = dict(source="synthetic", name="glyphs", classes=3, samples=10, image_size=[16, 16], channels=1, validation=0.2, test=0.2)
    plain = load_image_splits(Data(**fields), seed=0)
    rotated = load_image_splits(Data(**fields, rotations=[0, 90, 180]), seed=0)
    assert rotated.class_names[:4] == ["glyph-0@0", "glyph-0@90", "glyph-0@180", "glyph-1@0"] and len(rotated.class_names) == 9
    assert rotated.counts == {split: 3 * count for split, count in plain.counts.items()}
    for split in ("validation", "test"):
        images, labels = _all(getattr(plain, split))
        turned_images, turned_labels = _all(getattr(rotated, split))
        for turn in range(3):  # class i turned by rotations[j] is class 3 * i + j: the split's images, turned
            kept = turned_labels % 3 == turn
            np.testing.assert_array_equal(turned_labels[kept] // 3, labels)
            np.testing.assert_array_equal(turned_images[kept], np.rot90(images, turn, axes=(1, 2)))


def test_hub_base_without_keras_hub_is_a_clear_error():
    pytest.importorskip("keras", reason="keras is a dependency")
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="pip install 'workbench\\[hub\\]'"):
            build_backbone(Base(source="hub", name="resnet_18_imagenet"), (32, 32, 3))
    else:
        pytest.skip("keras-hub is installed")


def test_a_folder_with_one_class_is_refused(tmp_path):
    _write_folder(tmp_path / "set", ["only"], per_class=6)
    data = Data(source="folder", path=str(tmp_path / "set"), image_size=[16, 16], validation=0.25)
    with pytest.raises(DataError, match=r"The data hold 1 class \('only'\), but a classifier needs at least 2") as caught:
        load_image_splits(data, seed=0)
    assert "\n" not in str(caught.value)


def test_a_class_too_small_to_split_is_named_by_its_folder(tmp_path):
    _write_folder(tmp_path / "set", ["greek/alpha", "greek/beta", "latin/a"], per_class=4)
    for extra in sorted((tmp_path / "set" / "greek" / "beta").iterdir())[1:]:
        extra.unlink()
    data = Data(source="folder", path=str(tmp_path / "set"), image_size=[16, 16], validation=0.25)
    with pytest.raises(DataError, match=r"Class 'greek/beta' has 1 image, too few .* each class needs at least 2"):
        load_image_splits(data, seed=0)


def test_the_warning_about_a_damaged_file_names_it_and_says_why(tmp_path, caplog):
    _write_folder(tmp_path / "set", ["a", "b"], per_class=4)
    (tmp_path / "set" / "b" / "broken.png").write_bytes(b"\x89PNG but not really")
    data = Data(source="folder", path=str(tmp_path / "set"), image_size=[16, 16], validation=0.25)
    with caplog.at_level("WARNING"):
        splits = load_image_splits(data, seed=0)
    assert sum(splits.counts.values()) == 8
    assert f"skipped 1 unreadable image file in {tmp_path / 'set'}: b/broken.png: not an image format Pillow can read" in caplog.text
    assert "BytesIO" not in caplog.text
