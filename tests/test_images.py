import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.images import ImageFolder, convert_pixels, load_image
from workbench.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("WORKBENCH_DATA", "../shared/data"))
    return root if root.is_absolute() else REPO / root


OMNIGLOT_SMALL1 = data_root() / "omniglot" / "images_background_small1.zip"


def write(path: Path, image: Image.Image | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        image.save(path)


def palette_image() -> Image.Image:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    return image


@pytest.fixture
def tree(tmp_path) -> Path:
    """Two groups, three classes, one image of each mode, one corrupt file, one text file."""
    root = tmp_path / "dataset"
    write(root / "Alpha" / "char1" / "a_gray.png", Image.new("L", (12, 9), 100))
    write(root / "Alpha" / "char1" / "b_red.png", Image.new("RGB", (7, 7), (255, 0, 0)))
    write(root / "Alpha" / "char2" / "c_clear.png", Image.new("RGBA", (8, 8), (0, 0, 0, 0)))
    write(root / "Alpha" / "char2" / "d_half.png", Image.new("RGBA", (8, 8), (0, 0, 0, 128)))
    write(root / "Alpha" / "char2" / "e_palette.GIF", palette_image())
    write(root / "Beta" / "char1" / "f_16bit.png", Image.fromarray(np.full((6, 6), 128 * 257, np.uint16)))
    write(root / "Beta" / "char1" / "g_corrupt.png", b"\x89PNG\r\n\x1a\n this is not a picture")
    write(root / "Beta" / "char1" / "notes.txt", b"ignored: not an image")
    return root


def zip_tree(root: Path, archive: Path, prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(root.rglob("*")):
            out.write(path, prefix + path.relative_to(root).as_posix())
    return archive


def test_open_lists_classes_groups_and_files_without_decoding(tree):
    folder = ImageFolder.open(tree)
    assert folder.classes == ("Alpha/char1", "Alpha/char2", "Beta/char1")
    assert folder.groups == ("Alpha", "Alpha", "Beta")
    assert folder.group_names == ("Alpha", "Beta")
    assert folder.files[2] == ("Beta/char1/f_16bit.png", "Beta/char1/g_corrupt.png")


def test_load_converts_every_mode_and_reports_the_corrupt_file(tree):
    loaded = ImageFolder.open(tree).load(image_size=(4, 5), channels=1)
    assert loaded.images.shape == (6, 4, 5, 1)
    assert loaded.images.dtype == np.uint8
    np.testing.assert_array_equal(loaded.labels, [0, 0, 1, 1, 1, 2])
    assert loaded.stats.loaded == 6
    assert loaded.stats.skipped == 1
    # The file's name and why, not Pillow's `<_io.BytesIO object at 0x...>`.
    assert loaded.stats.skipped_files == (
        "Beta/char1/g_corrupt.png: not an image format Pillow can read (a damaged file, or not an image)",
    )
    gray, red, clear, half, palette, sixteen = (int(image.mean()) for image in loaded.images)
    assert gray == 100
    assert red == 76  # ITU-R 601 luminance of pure red
    assert clear == 255  # transparency is composited on white
    assert 126 <= half <= 128
    assert palette == 29  # luminance of the palette's blue
    assert sixteen == 128  # 16-bit values are rescaled, not clipped


def test_load_rgb_keeps_colours(tree):
    loaded = ImageFolder.open(tree).load(["Alpha/char1"], image_size=(3, 3), channels=3)
    assert loaded.images.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(loaded.images[0], np.full((3, 3, 3), 100))
    np.testing.assert_array_equal(loaded.images[1], np.broadcast_to([255, 0, 0], (3, 3, 3)))


def test_class_subset_labels_follow_the_requested_order_and_per_class_limits(tree):
    loaded = ImageFolder.open(tree).load(["Beta/char1", "Alpha/char2"], image_size=(4, 4), per_class=2)
    np.testing.assert_array_equal(loaded.labels, [0, 1, 1])
    assert loaded.class_names == ("Beta/char1", "Alpha/char2")
    by_class = loaded.by_class()
    assert [len(images) for images in by_class] == [1, 2]
    assert loaded.stats.skipped == 1


@pytest.mark.parametrize("prefix", ["", "wrapper/"])
def test_zip_archive_loads_like_the_directory(tree, tmp_path, prefix):
    archive = zip_tree(tree, tmp_path / "dataset.zip", prefix)
    from_zip = ImageFolder.open(archive)
    from_dir = ImageFolder.open(tree)
    assert from_zip.classes == from_dir.classes
    assert from_zip.files == from_dir.files
    assert from_zip.root == prefix.rstrip("/")
    zip_images = from_zip.load(image_size=(5, 5))
    np.testing.assert_array_equal(zip_images.images, from_dir.load(image_size=(5, 5)).images)
    assert zip_images.stats.skipped == 1


def test_nested_classes_at_any_depth_and_lone_wrapper_folders(tmp_path):
    root = tmp_path / "outer" / "inner"
    for name in ("a/b/c/x.png", "a/b/c/y.jpeg", "a/d/z.bmp", "e/w.webp"):
        write(root / name, Image.new("RGB", (5, 5), (10, 20, 30)))
    folder = ImageFolder.open(tmp_path / "outer")
    assert folder.root == "inner"
    assert folder.classes == ("a/b/c", "a/d", "e")
    assert folder.groups == ("a", "a", "e")
    assert folder.load(image_size=(2, 2)).stats.loaded == 4


def test_a_single_class_folder_is_not_taken_for_a_wrapper(tmp_path):
    write(tmp_path / "cat" / "1.png", Image.new("L", (4, 4)))
    assert ImageFolder.open(tmp_path).classes == ("cat",)


def test_hidden_and_macos_metadata_files_are_ignored(tree, tmp_path):
    write(tree / ".hidden" / "x.png", Image.new("L", (4, 4)))
    archive = zip_tree(tree, tmp_path / "mac.zip", "")
    with zipfile.ZipFile(archive, "a") as out:
        out.writestr("__MACOSX/Alpha/char1/._a_gray.png", b"resource fork")
    assert ImageFolder.open(archive).classes == ("Alpha/char1", "Alpha/char2", "Beta/char1")


def test_counts_lists_files_per_class_without_decoding(tree):
    folder = ImageFolder.open(tree)
    assert folder.counts() == {"Alpha/char1": 2, "Alpha/char2": 3, "Beta/char1": 2}  # the corrupt file counts too
    assert folder.counts(["Beta/char1", "Alpha/char1"]) == {"Beta/char1": 2, "Alpha/char1": 2}


def test_decoded_arrays_convert_exactly_as_files(tree):
    for name in ("Alpha/char1/b_red.png", "Alpha/char2/d_half.png", "Alpha/char2/e_palette.GIF"):
        pixels = np.asarray(Image.open(tree / name).convert("RGBA"))
        for channels in (1, 3):
            np.testing.assert_array_equal(convert_pixels(pixels, (5, 3), channels), load_image(tree / name, (5, 3), channels))


def test_load_image(tree):
    image = load_image(tree / "Alpha" / "char1" / "b_red.png", (6, 4), channels=3)
    assert image.shape == (6, 4, 3)
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    assert load_image(tree / "Alpha" / "char2" / "c_clear.png", (2, 2)).shape == (2, 2, 1)


def test_load_image_errors(tree):
    with pytest.raises(DataError, match="No such image file"):
        load_image(tree / "missing.png", (4, 4))
    with pytest.raises(DataError, match="Cannot decode the image \\(not an image format Pillow can read") as caught:
        load_image(tree / "Beta" / "char1" / "g_corrupt.png", (4, 4))
    assert "BytesIO" not in str(caught.value) and "g_corrupt.png" in str(caught.value)
    with pytest.raises(DataError, match="channels"):
        load_image(tree / "Alpha" / "char1" / "b_red.png", (4, 4), channels=4)


def test_open_errors(tmp_path):
    with pytest.raises(DataError, match="No such directory or .zip archive.*Received: path="):
        ImageFolder.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        ImageFolder.open(tmp_path / "empty")
    write(tmp_path / "text" / "a" / "readme.txt", b"no images here")
    with pytest.raises(DataError, match="holds no image files"):
        ImageFolder.open(tmp_path / "text")
    write(tmp_path / "flat" / "1.png", Image.new("L", (4, 4)))
    with pytest.raises(DataError, match="outside any class folder"):
        ImageFolder.open(tmp_path / "flat")
    write(tmp_path / "notzip.zip", b"plain bytes")
    with pytest.raises(DataError, match="not a zip archive"):
        ImageFolder.open(tmp_path / "notzip.zip")


def test_load_errors(tree):
    write(tree / "Beta" / "broken" / "x.png", b"garbage")
    folder = ImageFolder.open(tree)
    with pytest.raises(DataError, match="Class 'Beta/broken' has no readable image"):
        folder.load()
    with pytest.raises(DataError, match="Unknown class 'Gamma'"):
        folder.load(["Gamma"])
    with pytest.raises(DataError, match="per_class"):
        folder.load(per_class=0)


@pytest.mark.skipif(not OMNIGLOT_SMALL1.exists(), reason=f"Omniglot not found at {OMNIGLOT_SMALL1}")
def test_omniglot_background_small1_archive():
    folder = ImageFolder.open(OMNIGLOT_SMALL1)
    assert len(folder.classes) == 136
    assert folder.group_names == ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
    assert folder.classes[0] == "Balinese/character01"
    assert sum(len(files) for files in folder.files) == 2720
    loaded = folder.load(folder.classes[:3], image_size=(28, 28), per_class=5)
    assert loaded.images.shape == (15, 28, 28, 1)
    assert loaded.stats.skipped == 0
    assert loaded.images.mean() > 200  # black strokes on white
