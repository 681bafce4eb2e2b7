"""A self-contained HTML page with one before/after slider per model (bicubic | model), no network.

Everything is inside the one file: images as data: URIs (PNG), CSS and JavaScript inline, and a
Content-Security-Policy that forbids fetching anything, so the page works offline and from an
e-mail attachment. The divider follows a mouse or touch drag on the picture, and the range input
under it moves it by keyboard (arrow keys, Page Up/Down, Home/End) for screen-reader and keyboard
users. Torch-free.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import numpy as np

from .images import ImageEncodeSettings, encode_image

DISPLAY_WIDTH = 480
"""Crops are shown enlarged (pixelated, whole-number zoom) until about this wide; the zoom buttons change it."""


@dataclass(frozen=True)
class Comparand:
    """One side of a slider: pixels and what they are."""

    pixels: np.ndarray
    """H x W x 3 uint8 RGB."""
    title: str
    lines: tuple[str, ...] = ()


def png_data_uri(pixels: np.ndarray) -> str:
    png = encode_image(np.ascontiguousarray(pixels), ImageEncodeSettings("png"))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def default_zoom(width: int) -> int:
    return max(1, min(8, DISPLAY_WIDTH // max(1, width)))


_STYLE = """
:root { --zoom: 1; color-scheme: light; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px; color: #111; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 6px; }
.legend { color: #555; max-width: 72em; margin: 0 0 12px; }
.zoom button { font: inherit; margin-right: 4px; padding: 2px 10px; }
.zoom button[aria-pressed="true"] { background: #222; color: #fff; }
.sliders { display: flex; flex-wrap: wrap; gap: 24px; margin-top: 16px; }
figure { margin: 0; }
.frame { position: relative; width: calc(var(--w) * var(--zoom) * 1px); height: calc(var(--h) * var(--zoom) * 1px);
         cursor: ew-resize; touch-action: none; user-select: none; outline: 1px solid #aaa; }
.frame img { position: absolute; inset: 0; width: 100%; height: 100%; image-rendering: pixelated;
             pointer-events: none; -webkit-user-drag: none; }
.frame .after { clip-path: inset(0 0 0 var(--pos)); }
.divider { position: absolute; top: 0; bottom: 0; left: var(--pos); width: 2px; margin-left: -1px;
           background: #fff; box-shadow: 0 0 0 1px rgba(0,0,0,.6); pointer-events: none; }
.divider::after { content: "\\2194"; position: absolute; top: 50%; left: 50%; transform: translate(-50%, -50%);
                  background: #fff; color: #111; border-radius: 50%; width: 26px; height: 26px; text-align: center;
                  line-height: 26px; box-shadow: 0 0 0 1px rgba(0,0,0,.6); }
.tag { position: absolute; top: 6px; padding: 1px 6px; background: rgba(0,0,0,.65); color: #fff; font-size: 13px;
       pointer-events: none; }
.tag-before { left: 6px; } .tag-after { right: 6px; }
input[type=range] { display: block; width: calc(var(--w) * var(--zoom) * 1px); margin: 8px 0 4px; }
figcaption { color: #333; } figcaption b { color: #111; }
"""

_SCRIPT = """
(function () {
  function setPosition(figure, percent) {
    percent = Math.max(0, Math.min(100, percent));
    figure.querySelector('.frame').style.setProperty('--pos', percent + '%');
    var range = figure.querySelector('input[type=range]');
    range.value = percent;
    range.setAttribute('aria-valuetext', Math.round(percent) + '% bicubic');
    figure.dataset.position = percent.toFixed(1);
  }
  document.querySelectorAll('figure.slider').forEach(function (figure) {
    var frame = figure.querySelector('.frame');
    var range = figure.querySelector('input[type=range]');
    function follow(event) {
      var box = frame.getBoundingClientRect();
      setPosition(figure, (event.clientX - box.left) / box.width * 100);
    }
    frame.addEventListener('pointerdown', function (event) {
      frame.setPointerCapture(event.pointerId);
      follow(event);
      event.preventDefault();
    });
    frame.addEventListener('pointermove', function (event) {
      if (frame.hasPointerCapture(event.pointerId)) { follow(event); }
    });
    range.addEventListener('input', function () { setPosition(figure, parseFloat(range.value)); });
    setPosition(figure, parseFloat(range.value));
  });
  document.querySelectorAll('.zoom button').forEach(function (button) {
    button.addEventListener('click', function () {
      document.documentElement.style.setProperty('--zoom', button.dataset.zoom);
      document.querySelectorAll('.zoom button').forEach(function (other) {
        other.setAttribute('aria-pressed', other === button ? 'true' : 'false');
      });
    });
  });
})();
"""


def _slider(index: int, before: Comparand, after: Comparand, before_uri: str) -> str:
    height, width = after.pixels.shape[:2]
    label = f"divider between {before.title} (left) and {after.title} (right)"
    caption = "<br>".join([f"<b>{html.escape(after.title)}</b>"] + [html.escape(line) for line in after.lines])
    return f"""
<figure class="slider" id="slider-{index}" data-model="{html.escape(after.title)}">
  <div class="frame" style="--w: {width}; --h: {height}; --pos: 50%">
    <img class="before" src="{before_uri}" alt="{html.escape(before.title)}" width="{width}" height="{height}">
    <img class="after" src="{png_data_uri(after.pixels)}" alt="{html.escape(after.title)}" width="{width}"
         height="{height}">
    <div class="divider"></div>
    <span class="tag tag-before">{html.escape(before.title)}</span><span class="tag tag-after">{html.escape(after.title)}</span>
  </div>
  <input type="range" min="0" max="100" step="0.5" value="50" aria-label="{html.escape(label)}"
         style="--w: {width}">
  <figcaption>{caption}</figcaption>
</figure>"""


def render_slider_page(title: str, legend: list[str], before: Comparand, afters: list[Comparand]) -> str:
    """The page: a title, the legend, zoom buttons, and one slider per entry of ``afters`` against ``before``."""
    width = before.pixels.shape[1]
    zoom = default_zoom(width)
    before_uri = png_data_uri(before.pixels)
    zooms = sorted({1, 2, 4, 8, zoom})
    buttons = "".join(f'<button type="button" data-zoom="{z}" aria-pressed="{"true" if z == zoom else "false"}">'
                      f"{z}\u00d7</button>" for z in zooms)
    sliders = "".join(_slider(i, before, after, before_uri) for i, after in enumerate(afters))
    legend_html = "".join(f"<p class=\"legend\">{html.escape(line)}</p>" for line in legend)
    before_lines = ", ".join(before.lines)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<style>:root {{ --zoom: {zoom}; }}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
{legend_html}
<p class="legend">Left of each divider: {html.escape(before.title)}{f" ({html.escape(before_lines)})" if before_lines else ""};
right of it: the model named under the picture. Drag on a picture, or focus its slider and use the arrow keys,
to move the divider.</p>
<div class="zoom" role="group" aria-label="zoom">Zoom: {buttons}</div>
<main class="sliders">{sliders}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
