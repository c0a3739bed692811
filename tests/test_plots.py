"""The run report's pictures and HTML page (`vrp-bench plot`, `run --plots`): every picture of a real tiny run is a
real PNG, the heatmap's box lies on the box's pixels, missing data is a stated skip, bad input is one line and
writes nothing, and the page, opened from disk in headless Chromium, shows every image and asks the network for
nothing."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from test_leaderboard_browser import browser  # noqa: F401  (the session's headless Chromium)
from vrp_bench.api.errors import UsageError
from vrp_bench.evaluator import SampleRecord, TaskResult
from vrp_bench.report.html_report import PAGE_NAME, report_html
from vrp_bench.report.plot_inputs import check_layers, load_plot_inputs, resolve_layers
from vrp_bench.report.plots import BOX_COLOR, NO_TRACES, attention_pictures, draw_attention, layer_profile_pictures
from vrp_bench.report.results import read_attention_maps, traces_npz

TASKS = ("vrp_shapes_color", "vrp_shapes_count")  # mostly right + mostly wrong: both classes for the probes
EXPECTED = ["attention_vrp_shapes_color.png", "attention_vrp_shapes_count.png", "layers_h_s_layers.png",
            "layers_delta_h_s_layers.png", "layers_gaze_divergence_layers.png", "layers_residual_update_image_layers.png",
            "layers_margin_attention_layers.png", "layers_margin_mlp_layers.png", "reliability.png", "risk_coverage.png", "probe_per_layer.png",
            "ablation_retention.png"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small real run of the tiny LLaVA with a cheap ablation, made with `run --plots`: (folder, CLI output)."""
    from vrp_bench.cli import main

    output = tmp_path_factory.mktemp("plotted")
    code = main(["run", "--ablate", "--model", "tiny_llava", "--tasks", ",".join(TASKS), "--limit", "12",
                 "--batch_size", "12", "--sc_samples", "0", "--bootstrap_resamples", "100", "--permutations", "0",
                 "--cv_repeats", "1", "--layer", "1", "--fractions", "0,0.5,1", "--ablation_seeds", "1",
                 "--patch_fraction", "0", "--calibration_docs", "4", "--output_path", str(output), "--plots"])
    assert code == 0
    return output / "tiny_llava"


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_run_with_plots_draws_every_picture_and_the_page(run) -> None:
    plots = run / "plots"
    for name in EXPECTED:
        png = (plots / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000, name
        pixels = _pixels(png).astype(np.int64)
        colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
        assert len(colours) > 10, f"{name} is (nearly) uniform"
    page = (plots / PAGE_NAME).read_text()
    for name in EXPECTED:
        assert f'<img src="{name}"' in page
    assert "Not drawn" not in page  # this run has the data of every picture
    assert "Reliability signals within task" in page and "Ablation of residual units" in page
    (traces,) = run.glob("*_traces_vrp_shapes_color.npz")
    maps = read_attention_maps(traces.read_bytes())
    samples = [json.loads(line) for line in next(run.glob("*_samples_vrp_shapes_color.jsonl")).read_text().splitlines()]
    for name, layers in (("answer_attention_mean", 3), ("vision_attention", 2)):
        assert sorted(maps[name]) == [r["doc_id"] for r in samples]
        first = maps[name][0]
        assert first.dtype == np.float32 and first.ndim == 3 and len(first) == layers


def test_pictures_are_deterministic(run, tmp_path) -> None:
    inputs = load_plot_inputs(run)
    for picture in [*attention_pictures(inputs), *layer_profile_pictures(inputs)]:
        assert picture.png == (run / "plots" / picture.name).read_bytes(), picture.name


def test_the_box_is_drawn_on_its_pixels_and_the_map_on_its_cells() -> None:
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    attention = np.zeros((4, 4))
    attention[1, 2] = 1.0  # the cell x in [32, 48), y in [16, 32)
    box = (8.0, 36.0, 30.0, 60.0)
    figure = Figure(figsize=(4, 4), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    draw_attention(axes, image, attention, [box])
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)

    def at(x: float, y: float) -> np.ndarray:
        """The rendered colour at image pixel coordinates (x, y)."""
        column, row = axes.transData.transform((x, y))
        return pixels[pixels.shape[0] - 1 - round(row), round(column)]

    cyan = np.array(to_rgb(BOX_COLOR)) * 255
    x0, y0, x1, y1 = box
    for x, y in (((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)):
        assert np.abs(at(x, y) - cyan).max() < 40, (x, y, at(x, y))
    inside, outside = at((x0 + x1) / 2, (y0 + y1) / 2), at(56, 8)
    assert np.abs(inside - cyan).max() > 100 and np.array_equal(inside, outside)  # an outline, not a fill
    hot, cold = at(40, 24), at(24, 24)
    assert hot.sum() > cold.sum() + 200  # the hot cell is drawn where the grid puts it
    assert np.array_equal(at(33, 17), at(47, 31)) and not np.array_equal(at(31, 24), hot)


def test_missing_data_is_skipped_with_its_reason(run, tmp_path, cli) -> None:
    report_only = tmp_path / "report_only"
    report_only.mkdir()
    (results,) = run.glob("*_results.json")
    shutil.copy(results, report_only)
    code, _, err = cli("plot", report_only)
    assert code == 0, err
    page = (report_only / "plots" / PAGE_NAME).read_text()
    assert "Skipped: the run has no per-sample files (run with --log_samples)." in page
    assert (report_only / "plots" / "ablation_retention.png").is_file()  # drawn from the report alone
    assert not (report_only / "plots" / "reliability.png").exists()
    inputs = replace(load_plot_inputs(run), attention={})  # as a run without --save_traces
    pictures = attention_pictures(inputs)
    assert [p.skipped for p in pictures] == [NO_TRACES] * len(TASKS)
    assert f"Skipped: {NO_TRACES}." in report_html(inputs, pictures)


def _malformed(tmp_path: Path, run: Path) -> Path:
    folder = tmp_path / "malformed"
    folder.mkdir()
    (folder / "x_results.json").write_text("{not json")
    return folder


def _edited(tmp_path: Path, run: Path) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("plots"))
    samples = next(folder.glob("*_samples_vrp_shapes_color.jsonl"))
    samples.write_text(samples.read_text().replace('"correct": true', '"correct": false', 1))
    return folder


@pytest.mark.parametrize("make, args, message", [
    (lambda tmp_path, run: tmp_path, [], "must hold exactly one *_results.json (found none)"),
    (_malformed, [], "x_results.json:1: not JSON"),
    (_edited, [], "content differs from its sha256"),
    (lambda tmp_path, run: run, ["--layers", "a,b"], "--layers 'a,b': expected whole numbers"),
    (lambda tmp_path, run: run, ["--layers", "7"], "--layers 7: no such layer (layers: decoder 0..2; vision 0..1)"),
])
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, cli, make, args, message) -> None:
    output = tmp_path / "pictures"
    code, _, err = cli("plot", make(tmp_path, run), "--output", output, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not output.exists()


def test_layers_option() -> None:
    assert check_layers(None) is None and check_layers("0, -1") == (0, -1)
    with pytest.raises(UsageError):
        check_layers(",")
    assert resolve_layers(None, 3) == ([0, 1, 2], []) and resolve_layers(None, 32) == ([0, 16, 31], [])
    assert resolve_layers((0, -1, 2, 5), 2) == ([0, 1], [2, 5])


def test_traces_keep_only_the_maps_of_the_first_grid(caplog) -> None:
    def record(doc_id: int, grid: int) -> SampleRecord:
        return SampleRecord(doc_id, attention_maps={"answer_attention_mean": np.full((2, grid, grid), doc_id, np.float32)})

    result = TaskResult(SimpleNamespace(name="ragged"), 3, [record(0, 4), record(1, 6), record(2, 4)])
    content = traces_npz(result)
    maps = read_attention_maps(content)
    assert sorted(maps["answer_attention_mean"]) == [0, 2] and maps["answer_attention_mean"][2][0, 0, 0] == 2
    with np.load(io.BytesIO(content)) as data:
        assert data["answer_attention_mean_left_out_doc_ids"].tolist() == [1]
    assert "not saved in the traces file" in caplog.text


def test_the_page_shows_every_image_and_asks_the_network_for_nothing(run, browser) -> None:  # noqa: F811
    page = run / "plots" / PAGE_NAME
    browser.get(page.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(function (i) { return [i.getAttribute('src'), i.currentSrc, "
        "i.complete, i.naturalWidth]; });")
    assert sorted(src for src, _, _, _ in images) == sorted(EXPECTED)
    assert all(complete and width > 0 for _, _, complete, width in images), images
    assert all(loaded == (page.parent / src).as_uri() for src, loaded, _, _ in images)  # from beside the page
    # nothing else could ask the network: no script, stylesheet link, frame or object, no URL in an attribute or
    # in the inline CSS, and a policy that refuses any other source
    remote = browser.execute_script(
        "return Array.from(document.querySelectorAll('*')).flatMap(function (e) { "
        "return Array.from(e.attributes).map(function (a) { return a.value; }); }).filter(function (v) { "
        "return /(https?:)?\\/\\//i.test(v); });")
    assert remote == []
    assert browser.execute_script(
        "return document.querySelectorAll('script, link, iframe, frame, object, embed, video, audio, source').length;"
    ) == 0
    assert "url(" not in browser.execute_script(
        "return Array.from(document.querySelectorAll('style')).map(function (s) { return s.textContent; }).join('');")
    policy = browser.execute_script(
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content;")
    assert "default-src 'none'" in policy and "img-src 'self'" in policy
