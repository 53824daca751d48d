"""Class-labelled images from a directory or a `.zip` archive, one folder per class.

Layout: every folder that directly holds image files is a class, named by its path
relative to the root (`"Balinese/character01"`); its group is the first folder of
that path (`"Balinese"`, the alphabet in Omniglot). Classes may be nested at any
depth. A chain of lone wrapper folders above the classes is skipped, so a zip of
`images_background_small1/<Alphabet>/<character>/*.png` (or a directory holding just
such a folder) has the alphabets as top-level folders.

`ImageFolder.open` lists classes and files without decoding anything; `load` decodes,
converts and resizes. Corrupt files are skipped and reported in `LoadStats`, never
silently. No TensorFlow here: the data package wraps this into `tf.data`.

The conversion and resizing here are the only ones of the workbench: images that
other sources decode (TFDS) go through `convert_pixels`, so that one picture gives
the same pixels from a folder, a zip or a dataset.
"""

import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from workbench.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

# What Pillow raises for a file it cannot decode, and what zipfile raises for a
# member whose compressed bytes are damaged (bad CRC, bad deflate stream).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, zipfile.BadZipFile)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Pillow names an unknown format by the repr of the stream it read (`<_io.BytesIO
# object at 0x...>`), which tells a user nothing; the file name goes beside this instead.
_UNKNOWN_FORMAT = "not an image format Pillow can read (a damaged file, or not an image)"


@dataclass(frozen=True)
class LoadStats:
    """What `ImageFolder.load` read: `loaded` images, and files it `skipped`.

    `skipped_files` holds `"path: reason"` for each skipped (undecodable) file.
    """

    loaded: int
    skipped: int
    skipped_files: tuple[str, ...]


@dataclass(frozen=True)
class LoadedImages:
    """Decoded images with their labels (positions in `class_names`)."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int32 [N]
    class_names: tuple[str, ...]
    stats: LoadStats

    def by_class(self) -> list[np.ndarray]:
        """The images split per class, in `class_names` order (the input of `EpisodeSampler`)."""
        # Labels come out of `load` in ascending runs, so each class is one slice (a view).
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return np.split(self.images, np.cumsum(counts)[:-1])


@dataclass(frozen=True)
class ImageFolder:
    """The classes and image files of a directory or zip archive, not yet decoded.

    `classes` is sorted; `groups[i]` is the group of `classes[i]`; `files[i]` are the
    sorted file paths of `classes[i]`, relative to the root.
    """

    path: Path
    root: str  # posix path of the root inside `path` ("" when `path` itself is the root)
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    files: tuple[tuple[str, ...], ...]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ImageFolder":
        """Lists the classes of a directory or `.zip` archive.

        Raises:
            DataError: if the path does not exist, is neither a directory nor a zip
                archive, holds no image files, or holds images outside class folders.
        """
        path = Path(path)
        if path.is_dir():
            names = _directory_files(path)
        elif path.is_file():
            names = _zip_files(path)
        else:
            raise DataError(
                "No such directory or .zip archive of class-labelled images. Check the path, "
                f"or put the dataset there. Received: path={str(path)!r}"
            )
        image_paths = [PurePosixPath(name) for name in names if _is_image(name)]
        if not image_paths:
            what = "is empty" if not names else "holds no image files"
            raise DataError(
                f"The dataset {what}. Expected one sub-folder per class holding image files "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}). Received: path={str(path)!r}"
            )
        root, image_paths = _strip_wrappers(image_paths)
        stray = [str(p) for p in image_paths if len(p.parts) == 1]
        if stray:
            raise DataError(
                f"{len(stray)} image file(s) lie directly in the dataset root, outside any class "
                f"folder (e.g. {stray[0]!r}). Expected one sub-folder per class: move each image "
                f"into its class's folder. Received: path={str(path)!r}"
            )
        by_class: dict[str, list[str]] = {}
        for image_path in sorted(image_paths):
            by_class.setdefault(str(image_path.parent), []).append(str(image_path))
        classes = tuple(sorted(by_class))
        return cls(
            path=path,
            root=root,
            classes=classes,
            groups=tuple(PurePosixPath(name).parts[0] for name in classes),
            files=tuple(tuple(by_class[name]) for name in classes),
        )

    def counts(self, classes: Sequence[str] | None = None) -> dict[str, int]:
        """Image files per class of `classes` (default: all), without decoding any.

        An upper bound on what `load` gives: it skips files that fail to decode.
        """
        index = {name: i for i, name in enumerate(self.classes)}
        return {name: len(self.files[index[name]]) for name in (self.classes if classes is None else classes)}

    @property
    def group_names(self) -> tuple[str, ...]:
        """The distinct groups, sorted."""
        return tuple(sorted(set(self.groups)))

    def load(
        self,
        classes: Sequence[str] | None = None,
        image_size: tuple[int, int] = (28, 28),
        channels: int = 1,
        per_class: int | None = None,
    ) -> LoadedImages:
        """Decodes the images of `classes` (default: all), resized to `image_size`.

        Images are stretched to `(height, width)` with Pillow's antialiased bilinear
        filter and converted to `channels` (1: luminance, 3: RGB; transparency is
        composited on white). With `per_class`, each class keeps its first
        `per_class` readable files in sorted order. Labels are positions in `classes`.

        Raises:
            DataError: for an unknown class name, or a class with no readable image.
        """
        height, width = check_image_size(image_size)
        _check_channels(channels)
        if per_class is not None:
            check_positive_int("per_class", per_class)
        names = self.classes if classes is None else tuple(classes)
        if not names:
            raise DataError(f"Pass at least one class to load, or None for all. Received: classes={classes!r}")
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in names if name not in index]
        if unknown:
            raise DataError(
                f"Unknown class {unknown[0]!r}: it is not a class folder of {str(self.path)!r}, "
                f"which has {len(self.classes)} classes (e.g. {self.classes[0]!r}). "
                f"Received: classes={list(names)!r}"
            )
        images, labels, skipped = [], [], []
        with _Reader(self.path, self.root) as reader:
            for label, name in enumerate(names):
                kept = 0
                for file in self.files[index[name]]:
                    if per_class is not None and kept == per_class:
                        break
                    try:
                        images.append(_decode(reader.read(file), height, width, channels))
                    except _DECODE_ERRORS as error:
                        skipped.append(f"{file}: {error}")
                        continue
                    labels.append(label)
                    kept += 1
                if not kept:
                    raise DataError(
                        f"Class {name!r} has no readable image: all {len(self.files[index[name]])} "
                        f"of its files failed to decode. Replace or remove the damaged files. "
                        f"Received: path={str(self.path)!r}"
                    )
        return LoadedImages(
            images=np.stack(images),
            labels=np.asarray(labels, dtype=np.int32),
            class_names=names,
            stats=LoadStats(loaded=len(images), skipped=len(skipped), skipped_files=tuple(skipped)),
        )


def load_image(path: str | os.PathLike, image_size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """Decodes one image file into uint8 `[height, width, channels]`, as `ImageFolder.load` does.

    Raises:
        DataError: if the file does not exist or cannot be decoded.
    """
    height, width = check_image_size(image_size)
    _check_channels(channels)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No such image file. Check the path. Received: path={str(path)!r}")
    try:
        return _decode(path.read_bytes(), height, width, channels)
    except _DECODE_ERRORS as error:
        raise DataError(
            f"Cannot decode the image ({error}). Expected a {', '.join(sorted(IMAGE_EXTENSIONS))} file. Received: path={str(path)!r}"
        ) from error


def convert_pixels(pixels: np.ndarray, image_size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """Converts a decoded uint8 image `[H, W]` or `[H, W, 1 | 3 | 4]` exactly as `ImageFolder.load` converts files.

    For sources that decode images themselves (TFDS): the same picture gives the
    same pixels as from a file.

    Raises:
        DataError: for an array that is not a uint8 grayscale, RGB or RGBA image.
    """
    height, width = check_image_size(image_size)
    _check_channels(channels)
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))):
        raise DataError(
            "Expected a uint8 image [height, width] or [height, width, 1, 3 or 4 channels]. "
            f"Received: an array of {pixels.dtype} {pixels.shape}"
        )
    return _convert(Image.fromarray(pixels), height, width, channels)


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """Returns `image_size` as `(height, width)` after checking it is two positive ints."""
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or any(isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1 for side in image_size)
    ):
        raise DataError(f"`image_size` must be (height, width) in pixels, two positive integers. Received: image_size={image_size!r}")
    return int(image_size[0]), int(image_size[1])


def check_positive_int(name: str, value: int) -> int:
    """Returns `value` as an int after checking it is a positive integer (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise DataError(f"`channels` must be 1 (grayscale) or 3 (RGB). Received: channels={channels!r}")


def _is_image(name: str) -> bool:
    path = PurePosixPath(name)
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in path.parts)
    return not hidden and path.suffix.lower() in IMAGE_EXTENSIONS


def _directory_files(path: Path) -> list[str]:
    names = []
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        relative = PurePosixPath(Path(folder).relative_to(path).as_posix())
        names.extend(str(relative / name) for name in sorted(files))
    return names


def _zip_files(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"Expected a directory or a .zip archive of class folders, but this file is not a zip archive. Received: path={str(path)!r}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            return [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"Cannot read the zip archive ({error}). Received: path={str(path)!r}") from error


def _strip_wrappers(paths: list[PurePosixPath]) -> tuple[str, list[PurePosixPath]]:
    """Skips lone wrapper folders: a folder that all images share and that is not itself a class."""
    root = PurePosixPath()
    while all(len(p.parts) >= 3 for p in paths) and len({p.parts[0] for p in paths}) == 1:
        root /= paths[0].parts[0]
        paths = [PurePosixPath(*p.parts[1:]) for p in paths]
    return ("" if root == PurePosixPath() else str(root)), paths


class _Reader:
    """Reads files below the root of a directory or zip archive, keeping the zip open."""

    def __init__(self, path: Path, root: str):
        self._path = path
        self._root = PurePosixPath(root)
        self._archive: zipfile.ZipFile | None = None

    def __enter__(self) -> "_Reader":
        if self._path.is_file():
            self._archive = zipfile.ZipFile(self._path)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._archive is not None:
            self._archive.close()

    def read(self, name: str) -> bytes:
        member = str(self._root / name)
        if self._archive is not None:
            return self._archive.read(member)
        return (self._path / member).read_bytes()


def _decode(data: bytes, height: int, width: int, channels: int) -> np.ndarray:
    """Decodes image bytes to uint8 `[height, width, channels]`."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnidentifiedImageError(_UNKNOWN_FORMAT) from None
    # JPEG can decode at a reduced scale directly, much faster for large photos.
    image.draft("L" if channels == 1 else "RGB", (width, height))
    image.load()
    return _convert(image, height, width, channels)


def _convert(image: Image.Image, height: int, width: int, channels: int) -> np.ndarray:
    """Converts to grayscale (ITU-R 601-2 luma) or RGB, then resizes: the one conversion of every source."""
    image = _to_mode(image, "L" if channels == 1 else "RGB")
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Converts any Pillow mode to "L" or "RGB", compositing transparency on white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert() clips 16-bit values to 255 instead of rescaling them.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(mode)
