"""A comparison grid: equal-sized image panels side by side (wrapping into rows), each labelled, one legend.

Torch-free; Pillow (imported when called) draws the text with its bundled font, so the picture looks
the same on every machine and needs no font files or network. Panels are pasted pixel for pixel
(never resized), so what a cell shows is exactly the pixels it was given. :func:`render_grid`
returns the layout too (where each panel and label sits, and its texts) so callers can report it
and tests can check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_GRID_WIDTH = 1600
"""Panels wrap into a new row before the grid gets wider than this (a single wide panel may exceed it)."""
TITLE_SIZE = 20
LINE_SIZE = 16
LEGEND_SIZE = 15
PADDING = 12
LINE_GAP = 4
MIN_CELL_WIDTH = 200
BACKGROUND = (255, 255, 255)
TEXT = (17, 17, 17)
MUTED = (85, 85, 85)
FRAME = (170, 170, 170)


@dataclass(frozen=True)
class Panel:
    """One image of the grid and what its label says."""

    pixels: np.ndarray
    """H x W x 3 uint8 RGB; every panel of a grid has the same size."""
    title: str
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Cell:
    title: str
    lines: tuple[str, ...]
    image: Box
    """Where the panel's pixels are, 1:1."""
    label: Box
    """The band under the image that holds the title and lines."""


@dataclass(frozen=True)
class GridLayout:
    width: int
    height: int
    columns: int
    cells: tuple[Cell, ...]
    legend: tuple[str, ...]
    """The legend as drawn: wrapped into lines that fit the grid's width."""
    legend_box: Box


def _fonts():
    """(title, line, legend) fonts: Pillow's bundled scalable font, or its bitmap font without FreeType."""
    from PIL import ImageFont

    try:
        return tuple(ImageFont.load_default(size=size) for size in (TITLE_SIZE, LINE_SIZE, LEGEND_SIZE))
    except (ImportError, OSError, TypeError):  # Pillow built without FreeType: the small bitmap font
        fallback = ImageFont.load_default()
        return fallback, fallback, fallback


def _text_width(font, text: str) -> int:
    left, _top, right, _bottom = font.getbbox(text)
    return int(np.ceil(right - left))


def _line_height(font) -> int:
    _left, top, _right, bottom = font.getbbox("Ag|")
    return int(np.ceil(bottom - min(top, 0))) + LINE_GAP


def _wrap(font, text: str, width: int) -> list[str]:
    """Greedy word wrap of one paragraph into lines no wider than ``width`` (a single long word stays whole)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and _text_width(font, candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def layout_grid(panels: list[Panel], legend: list[str], fonts=None) -> GridLayout:
    """Where every panel, label and the legend go: cells of one size in rows of up to MAX_GRID_WIDTH."""
    if not panels:
        raise ValueError("a grid needs at least one panel")
    title_font, line_font, legend_font = fonts or _fonts()
    image_height, image_width = panels[0].pixels.shape[:2]
    if any(p.pixels.shape[:2] != (image_height, image_width) for p in panels):
        raise ValueError("every panel of a grid must have the same size")
    widest_text = max(max([_text_width(title_font, p.title)] + [_text_width(line_font, t) for t in p.lines])
                      for p in panels)
    cell_width = max(image_width, widest_text, MIN_CELL_WIDTH) + 2 * PADDING
    most_lines = max(len(p.lines) for p in panels)
    label_height = _line_height(title_font) + most_lines * _line_height(line_font) + PADDING
    cell_height = PADDING + image_height + PADDING // 2 + label_height
    columns = max(1, min(len(panels), MAX_GRID_WIDTH // cell_width))
    rows = -(-len(panels) // columns)
    width = columns * cell_width + PADDING
    legend_lines = tuple(line for paragraph in legend for line in _wrap(legend_font, paragraph, width - 2 * PADDING))
    legend_top = rows * cell_height + PADDING // 2
    legend_height = len(legend_lines) * _line_height(legend_font) + PADDING
    cells = []
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        left = PADDING + column * cell_width
        top = row * cell_height + PADDING
        image = Box(left + (cell_width - PADDING - image_width) // 2, top, image_width, image_height)
        label = Box(left, top + image_height + PADDING // 2, cell_width - PADDING, label_height)
        cells.append(Cell(panel.title, tuple(panel.lines), image, label))
    return GridLayout(width, legend_top + legend_height, columns, tuple(cells), legend_lines,
                      Box(PADDING, legend_top, width - 2 * PADDING, legend_height))


def render_grid(panels: list[Panel], legend: list[str]) -> tuple[np.ndarray, GridLayout]:
    """The grid as an H x W x 3 uint8 RGB array, and its layout."""
    from PIL import Image, ImageDraw

    fonts = _fonts()
    title_font, line_font, legend_font = fonts
    layout = layout_grid(panels, legend, fonts)
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for panel, cell in zip(panels, layout.cells, strict=True):
        box = cell.image
        draw.rectangle((box.x - 1, box.y - 1, box.x + box.width, box.y + box.height), outline=FRAME)
        canvas.paste(Image.fromarray(np.ascontiguousarray(panel.pixels[:, :, :3]), "RGB"), (box.x, box.y))
        y = cell.label.y
        _centred(draw, cell.label, y, cell.title, title_font, TEXT)
        y += _line_height(title_font)
        for line in cell.lines:
            _centred(draw, cell.label, y, line, line_font, MUTED)
            y += _line_height(line_font)
    y = layout.legend_box.y
    for line in layout.legend:
        draw.text((layout.legend_box.x, y), line, font=legend_font, fill=MUTED)
        y += _line_height(legend_font)
    return np.asarray(canvas), layout


def _centred(draw, band: Box, y: int, text: str, font, colour: tuple[int, int, int]) -> None:
    """Text centred in ``band`` (measured, not anchored: Pillow's bitmap fallback font has no anchors)."""
    draw.text((band.x + (band.width - _text_width(font, text)) // 2, y), text, font=font, fill=colour)
