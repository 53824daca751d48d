"""Crop a screenshot of a report page to the rows between two points, each moved to the nearest gap between blocks.

Usage: crop_screenshot.py SCREENSHOT OUTPUT TOP BOTTOM (pixels of a 1100-pixel-wide page).
TOP moves down and BOTTOM up to the first band of blank rows, so that a picture never
cuts a line of text when the page's layout shifts a little.
"""

import sys

import numpy as np
from PIL import Image

GAP = 12  # blank rows that separate two blocks (lines of text are closer)
CONTENT = (70, 1030)  # the white page between the grey margins


def blank_band(blank: np.ndarray, start: int, step: int) -> int:
    row = start
    while not blank[row : row + GAP].all():
        row += step
    return row


def main(screenshot: str, output: str, top: int, bottom: int) -> None:
    whole = Image.open(screenshot).convert("RGB")
    page = whole.crop((CONTENT[0], 0, CONTENT[1], whole.height))
    pixels = np.asarray(page)[:, 20:-20]
    blank = (pixels == 255).all(axis=(1, 2))
    top = blank_band(blank, top, 1)
    bottom = blank_band(blank, bottom - GAP, -1) + GAP
    page.crop((0, top, page.width, bottom)).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(output, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
