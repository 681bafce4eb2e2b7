"""`lightsr compare`: the grid shows the models' real output at the chosen region, labelled truthfully.

The CI-runnable tests use a generated image and the two embedded x4 models (no ../shared needed);
the Set14 test runs three small official x4 models from the shared mirror. The HTML page is
loaded in headless Chromium (Debian's package, driven by playwright) and its slider dragged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from lightsr_cli.cli import app
from lightsr_cli.errors import InputError, ModelError, UsageError
from lightsr_cli.media import grid
from lightsr_cli.metrics import psnr_y, ssim_y
from lightsr_cli.pipeline.compare import CropBox, auto_crop, check_crop, parse_crop, select_cards
from lightsr_cli.pipeline.compare_output import plan_targets
from tests.conftest import SHARED_DIR

EMBEDDED_X4 = ("bsrn-x4", "bsrn-s-x4")
SET14_MODELS = ("bsrn-s-x4", "plainusr-u-x4", "plainusr-t-x4")
CHROMIUM = Path("/usr/bin/chromium")


def run(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    planes = [120 + 50 * np.sin(x / (5 + c) + y / (7 + c)) + rng.normal(0, 20, (height, width)) for c in range(3)]
    return np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def _model_output(model_id: str, rgb: np.ndarray) -> np.ndarray:
    """The model's output run separately, as `lightsr upscale` computes it."""
    from lightsr_cli.pipeline.loading import EngineSettings, load_engine
    from lightsr_cli.pipeline.pixels import upscale_image
    from lightsr_cli.registry import get_card

    return upscale_image(load_engine(get_card(model_id), EngineSettings(device="cpu")), rgb)


def _region(pixels: np.ndarray, box: dict) -> np.ndarray:
    return pixels[box["y"]:box["y"] + box["height"], box["x"]:box["x"] + box["width"]]


def _drawn_text(text: str, size: int, band: dict, y_offset: int) -> np.ndarray:
    """The label band as it looks with only ``text`` drawn, centred, in Pillow's bundled font."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    left, _, right, _ = font.getbbox(text)
    image = Image.new("RGB", (band["width"], band["height"]), grid.BACKGROUND)
    ImageDraw.Draw(image).text(((band["width"] - int(np.ceil(right - left))) // 2, y_offset), text, font=font,
                               fill=grid.TEXT)
    return np.asarray(image)


def _auto_precision_on_this_cpu(model_id: str) -> str:
    """What --precision auto runs on this machine's CPU: its half precision for the models measured in it
    (tests/test_cpu_half.py), fp32 otherwise."""
    from lightsr_cli.engine.backends import MEASURED_CPU_HALF
    from lightsr_cli.engine.devices import cpu_half_precision

    half = cpu_half_precision()
    return half if half is not None and model_id in MEASURED_CPU_HALF[half] else "fp32"


def check_grid(report: dict, picture: np.ndarray, outputs: dict[str, np.ndarray], bicubic: np.ndarray) -> None:
    """Each cell holds exactly its output at the crop, and its label is drawn and says the right things."""
    out = report["crop"]["output"]
    assert picture.shape[:2] == (report["grid_size"][1], report["grid_size"][0])
    cells = report["cells"]
    assert [c["name"] for c in cells] == ["bicubic", *outputs]
    for cell in cells:
        expected = bicubic if cell["name"] == "bicubic" else outputs[cell["name"]]
        assert cell["image"]["width"] == out["width"] and cell["image"]["height"] == out["height"]
        np.testing.assert_array_equal(_region(picture, cell["image"]), _region(expected, out))
        assert cell["title"] == cell["name"]
        label = _region(picture, cell["label"])
        assert (label.min(axis=2) < 100).sum() > 50, f"label of {cell['name']} looks blank"
        title_band = _drawn_text(cell["title"], grid.TITLE_SIZE, cell["label"], 0)
        rows = grid.TITLE_SIZE  # the title's own line: no other text reaches into it
        np.testing.assert_array_equal(label[:rows], title_band[:rows])
        if cell["name"] == "bicubic":
            assert cell["lines"][0] == "baseline (Pillow bicubic)" and cell["ms_per_megapixel"] is None
        else:
            ms = cell["ms_per_megapixel"]
            assert ms > 0
            shown = f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"
            assert cell["lines"][0] == f"{shown} ms/MP, {_auto_precision_on_this_cpu(cell['name'])}"
    assert any("ms/MP: milliseconds of the model's forward passes per output megapixel" in line
               for line in [" ".join(report["legend"])])


# -- pure parts ---------------------------------------------------------------------------------

def test_crop_parsing_and_bounds():
    assert parse_crop("auto") is None and parse_crop(None) is None
    assert parse_crop("3, 4,10,20") == CropBox(3, 4, 10, 20)
    for bad in ("1,2,3", "a,b,c,d", "1,2,3,4,5", "-1,0,4,4", "0,0,0,4"):
        with pytest.raises(UsageError):
            parse_crop(bad)
    check_crop(CropBox(0, 0, 24, 20), 24, 20, "x.png")
    with pytest.raises(InputError, match=r"crop 20,0,8,8 \(X,Y,W,H\) reaches 28,8, outside x.png, which is 24x20"):
        check_crop(CropBox(20, 0, 8, 8), 24, 20, "x.png")


def test_auto_crop_finds_the_detailed_region():
    image = np.full((120, 160, 3), 128, np.uint8)
    image[70:102, 90:122] = _textured(32, 32)  # the only detail
    box = auto_crop(image, 32)
    assert (box.width, box.height) == (32, 32)
    assert abs(box.x - 90) <= 1 and abs(box.y - 70) <= 1  # the square's edges are gradients too
    small = auto_crop(image[:20, :30], 64)  # clipped to the image
    assert (small.width, small.height) == (30, 20)


def test_model_selection_rules():
    cards, skip = select_cards("bsrn-s-x4, bsrn-x4,bsrn-x4", False, None)
    assert [c.id for c in cards] == ["bsrn-s-x4", "bsrn-x4"] and not skip
    with pytest.raises(UsageError, match="different scales"):
        select_cards("bsrn-x2,bsrn-x4", False, None)
    with pytest.raises(UsageError, match="x4, not x2"):
        select_cards("bsrn-x4", False, 2)
    with pytest.raises(ModelError, match="unknown model 'nope-x4'"):
        select_cards("bsrn-x4,nope-x4", False, None)
    presets, _ = select_cards(None, True, 3)
    assert [c.id for c in presets] == ["bsrn-x3", "emt-x3"]  # fast and balanced are one model at x3
    every_x2, skip = select_cards(None, False, 2)
    assert skip and every_x2 and {c.scale for c in every_x2} == {2} and "plainusr-u-x2" in [c.id for c in every_x2]
    with pytest.raises(UsageError):
        select_cards("bsrn-x4", True, None)


def test_grid_wraps_and_places_panels_pixel_for_pixel():
    panels = [grid.Panel(_textured(40, 50, seed), f"model-{seed}", (f"line {seed}",)) for seed in range(9)]
    pixels, layout = grid.render_grid(panels, ["a legend that is long enough to wrap " * 20])
    assert layout.columns * (grid.MIN_CELL_WIDTH + 2 * grid.PADDING) <= grid.MAX_GRID_WIDTH + grid.PADDING
    assert 1 < layout.columns < 9 and len({c.image.y for c in layout.cells}) == -(-9 // layout.columns)
    assert len(layout.legend) > 1 and pixels.shape[1] == layout.width <= grid.MAX_GRID_WIDTH + grid.PADDING
    for panel, cell in zip(panels, layout.cells, strict=True):
        np.testing.assert_array_equal(_region(pixels, cell.image.as_dict()), panel.pixels)
        assert cell.title == panel.title and cell.lines == panel.lines


def test_output_names_follow_upscale_rules(tmp_path):
    source = _write_png(tmp_path / "shot.png", _textured(8, 8))
    assert plan_targets(source, None, False, False).grid == tmp_path / "shot_compare.png"
    both = plan_targets(source, tmp_path / "out" / "grid.webp", True, False)
    assert both.page == tmp_path / "out" / "grid.html"
    (tmp_path / "folder").mkdir()
    assert plan_targets(source, tmp_path / "folder", False, False).grid == tmp_path / "folder" / "shot_compare.png"
    (tmp_path / "shot_compare.html").write_text("mine")
    with pytest.raises(Exception, match="output exists"):
        plan_targets(source, None, True, False)
    with pytest.raises(UsageError):
        plan_targets(source, tmp_path / "grid.txt", False, False)


# -- the command on a generated image, embedded models (runs everywhere) --------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    rgb = _textured(36, 44)
    source = _write_png(folder / "scene.png", rgb)
    reference = _write_png(folder / "scene_hr.png", _textured(36 * 4 + 3, 44 * 4 + 1, seed=5))
    env = {"LIGHTSR_CACHE_DIR": str(folder / "cache"), "LIGHTSR_WEIGHTS_MIRROR": "", "LIGHTSR_OFFLINE": "1"}
    code, out, err = run("compare", str(source), "--models", ",".join(EMBEDDED_X4), "--crop", "5,7,20,16",
                         "--reference", str(reference), "--html", "--device", "cpu", "--json", env=env)
    assert code == 0, err
    return {"rgb": rgb, "source": source, "reference": reference, "report": json.loads(out)}


def test_grid_holds_each_models_output_at_the_crop(generated):
    report = generated["report"]
    assert report["grid"] == str(generated["source"].with_name("scene_compare.png"))
    assert report["crop"] == {"input": {"x": 5, "y": 7, "width": 20, "height": 16},
                              "output": {"x": 20, "y": 28, "width": 80, "height": 64}, "auto": False}
    rgb = generated["rgb"]
    outputs = {model: _model_output(model, rgb) for model in EMBEDDED_X4}
    from lightsr_cli.pipeline.compare import bicubic_upscale

    check_grid(report, _read_rgb(Path(report["grid"])), outputs, bicubic_upscale(rgb, 4))
    hr = _read_rgb(generated["reference"])[:36 * 4, :44 * 4]
    for cell in report["cells"][1:]:
        sr = outputs[cell["name"]]
        assert cell["psnr_y"] == round(psnr_y(sr, hr, 4), 4) and cell["ssim_y"] == round(ssim_y(sr, hr, 4), 4)
        assert cell["lines"][1] == f"PSNR-Y {psnr_y(sr, hr, 4):.2f} dB  SSIM-Y {ssim_y(sr, hr, 4):.4f}"


def test_errors_are_one_clear_line(tmp_path, generated):
    source = generated["source"]
    cases = [
        (["--models", "bsrn-x4,nope-x4"], "error: unknown model 'nope-x4'", 1),
        (["--models", "bsrn-x4", "--crop", "30,30,20,20"], "error: crop 30,30,20,20 (X,Y,W,H) reaches 50,50, "
                                                           "outside scene.png, which is 44x36", 1),
        (["--models", "bsrn-x4", "--crop", "1,2"], "error: --crop '1,2' is not auto or X,Y,W,H", 2),
        (["--models", "bsrn-x4", "--reference", str(source)], "error: reference scene.png is 44x36, but x4 of "
                                                                "the 44x36 input is 176x144", 1),
        (["--models", "bsrn-x2,bsrn-x4"], "error: models of different scales cannot be compared", 2),
    ]
    for extra, message, exit_code in cases:
        code, _, err = run("compare", str(source), "-o", str(tmp_path / "g.png"), "--device", "cpu", *extra)
        assert code == exit_code and err.startswith(message) and "Traceback" not in err, (extra, err)
    code, _, err = run("compare", str(source), "-o", str(tmp_path / "g.png"), "--models", "bsrn-x4", "--device", "cpu",
                       env={"LIGHTSR_MAX_INPUT_MEGAPIXELS": "0.001"})
    assert code == 1 and err.startswith("error: scene.png is 44x36 = 0.0 megapixels, above the input limit"), err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run("compare", str(broken), "--models", "bsrn-x4", "--device", "cpu")
    assert code == 1 and err.startswith("error: ") and "broken.png" in err and len(err.strip().splitlines()) <= 2
    code, _, err = run("compare", str(source), "--models", "bsrn-x4", "--device", "cpu")
    assert code == 1 and "error: output exists:" in err and "--overwrite" in err
    assert not list(tmp_path.glob("g*")) and not list(tmp_path.glob(".*part"))


# -- the HTML page in headless Chromium -----------------------------------------------------------

def _chromium_page(playwright):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium): apt-get install chromium")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"])
    return browser, browser.new_page(viewport={"width": 1200, "height": 900})


def check_page_in_chromium(page_path: Path, models: tuple[str, ...]) -> None:
    """The page renders every slider; a mouse drag and the arrow keys move the divider; nothing is fetched."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        browser, page = _chromium_page(playwright)
        try:
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_path.as_uri())
            sliders = page.locator("figure.slider")
            assert sliders.count() == len(models)
            assert [sliders.nth(i).get_attribute("data-model") for i in range(len(models))] == list(models)
            for i in range(len(models)):  # every image decoded (a broken data: URI has naturalWidth 0)
                assert sliders.nth(i).locator("img").evaluate_all("imgs => imgs.every(i => i.naturalWidth > 0)")
            frame = sliders.nth(0).locator(".frame")
            frame.scroll_into_view_if_needed()
            box = frame.bounding_box()
            assert box["width"] > 100
            before = frame.screenshot()
            assert sliders.nth(0).get_attribute("data-position") == "50.0"
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            after = frame.screenshot()
            position = float(sliders.nth(0).get_attribute("data-position"))
            assert 10 < position < 20, position
            assert after != before
            range_input = sliders.nth(0).locator("input[type=range]")
            assert float(range_input.input_value()) == pytest.approx(position, abs=0.5)
            range_input.focus()
            page.keyboard.press("ArrowRight")
            assert float(sliders.nth(0).get_attribute("data-position")) > position
            assert all(url.startswith(("file:", "data:")) for url in requests), requests
        finally:
            browser.close()


def test_html_slider_moves_in_headless_chromium(generated):
    page = generated["source"].with_name("scene_compare.html")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text
    check_page_in_chromium(page, EMBEDDED_X4)


# -- Set14 with three official models -----------------------------------------------------------

@pytest.mark.skipif(SHARED_DIR is None, reason="../shared (official weights, Set14) is not beside this checkout")
def test_set14_three_models_grid_crops_labels_and_page(tmp_path, monkeypatch):
    mirror = SHARED_DIR / "weights" / "official"
    monkeypatch.setenv("LIGHTSR_WEIGHTS_MIRROR", str(mirror))
    pairs = SHARED_DIR / "data" / "benchmarks" / "Set14" / "x4"
    source = Path(shutil.copy(pairs / "LR" / "img_003.png", tmp_path / "img_003.png"))
    reference = pairs / "HR" / "img_003.png"
    code, out, err = run("compare", str(source), "--models", ",".join(SET14_MODELS), "--reference", str(reference),
                         "--html", "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["crop"]["auto"] and report["grid"] == str(tmp_path / "img_003_compare.png")
    rgb = _read_rgb(source)
    outputs = {model: _model_output(model, rgb) for model in SET14_MODELS}
    from lightsr_cli.pipeline.compare import bicubic_upscale

    check_grid(report, _read_rgb(tmp_path / "img_003_compare.png"), outputs, bicubic_upscale(rgb, 4))
    from lightsr_cli.pipeline.evaluation import evaluate
    from lightsr_cli.pipeline.loading import EngineSettings, load_engine
    from lightsr_cli.registry import get_card

    one_image = tmp_path / "one"  # `lightsr eval`'s own protocol on this pair: the same numbers
    for kind, path in (("LR", source), ("HR", reference)):
        (one_image / "x4" / kind).mkdir(parents=True)
        shutil.copy(path, one_image / "x4" / kind / "img_003.png")
    for cell in report["cells"][1:]:
        score = evaluate(load_engine(get_card(cell["name"]), EngineSettings(device="cpu")), one_image)
        assert cell["psnr_y"] == round(score.psnr_y, 4) and cell["ssim_y"] == round(score.ssim_y, 4)
        assert re.fullmatch(r"PSNR-Y \d+\.\d\d dB  SSIM-Y 0\.\d{4}", cell["lines"][1])
    assert report["cells"][1]["psnr_y"] > report["cells"][0]["psnr_y"]  # a model beats bicubic
    check_page_in_chromium(tmp_path / "img_003_compare.html", SET14_MODELS)


def test_every_model_of_a_scale_leaves_out_the_unavailable_ones(tmp_path):
    source = _write_png(tmp_path / "tiny.png", _textured(12, 14))
    env = {"LIGHTSR_CACHE_DIR": str(tmp_path / "cache"), "LIGHTSR_WEIGHTS_MIRROR": "", "LIGHTSR_OFFLINE": "1"}
    code, out, err = run("compare", str(source), "--scale", "4", "--device", "cpu", "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    assert [c["name"] for c in report["cells"]] == ["bicubic", *EMBEDDED_X4]  # the x4 models shipped inside
    left_out = {entry.split(":")[0] for entry in report["skipped"]}
    assert left_out == {"a2n-x4", "emt-x4", "plainusr-u-x4", "plainusr-t-x4", "plainusr-s-x4", "plainusr-m-x4",
                        "plainusr-x4", "plainusr-l-x4", "grl-tiny-x4", "grl-small-x4", "grl-base-x4"}
    assert "left out emt-x4" in err and any(line.startswith("Left out") for line in report["legend"])
    code, _, err = run("compare", str(source), "--models", "bsrn-s-x4,emt-x4", "--device", "cpu", "-o",
                       str(tmp_path / "named.png"), env=env)
    assert code == 1 and err.strip().startswith("error: emt-x4 needs") and "Traceback" not in err  # never left out
    assert not (tmp_path / "named.png").exists()


def test_ctrl_c_mid_run_exits_130_and_writes_nothing(tmp_path, monkeypatch):
    from lightsr_cli.pipeline import compare as compare_module

    source = _write_png(tmp_path / "tiny.png", _textured(12, 14))
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0].id)
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "run_model", interrupted)
    code, _, err = run("compare", str(source), "--models", "bsrn-s-x4", "--html", "--device", "cpu")
    assert code == 130 and "error: interrupted" in err and calls == ["bsrn-s-x4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.png"]  # no grid, no page, no temp files
    for missing in ("missing.png", "notes.txt"):
        code, _, err = run("compare", str(tmp_path / missing), "--models", "bsrn-s-x4", "--device", "cpu")
        assert code == 1 and err.strip().splitlines()[0] in (f"error: no such file: {tmp_path / missing}",
                                                              f"error: unsupported image extension '.txt': "
                                                              f"{tmp_path / missing}"), err
