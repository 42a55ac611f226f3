"""Issue 24, Must show #1, in a real browser: the compressed model taken home from Explore.

Debian's chromium (Playwright) at 1280x720 on digits-cnn with 50 % unstructured pruning and int8 static: the bundle and
the ONNX file are downloaded through the page's own buttons (the ONNX file is built by the export job the "Build the
ONNX file" button starts, as a user would wait for it). Then, outside the page:

- the CLI re-measures the downloaded bundle (``python -m compression_core measure --bundle FILE --json``) and gives
  the accuracy and file size the page showed (equal to the page's rounding: 2 decimals of a percent, 0.1 KB), and the
  bundle records exactly those numbers;
- ONNX Runtime runs the downloaded .onnx on the workload's whole test split; its accuracy is within 1 point of the
  page's. Why a tolerance: the page's model is torch's int8 (x86/fbgemm kernels) while the .onnx is ONNX Runtime's
  QDQ int8 graph; the two engines requantize activations with their own rounding, so a few borderline test images can
  flip (on the machine this was written on the two agreed on all 360 test images; 1 point is 3 images, room for
  another CPU's kernels). The ONNX file's predictions must also agree with the bundle's torch model on >= 98 % of
  the test images.

Kept to one page visit (~60-90 s on a loaded 2-core machine): the CLI runs while the ONNX export job runs. Opening a
bundle on the Recipe page is checked with AppTest in tests/test_take_home.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from browser_helpers import (PROBLEMS_JS, browser, choose, needs_chromium, save_screenshot,  # noqa: F401 (fixtures)
                             server, wait_idle)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]

ROOT = Path(__file__).resolve().parent.parent
MODEL = "digits-cnn"
STEM = "digits-cnn-prune50-int8"  # the download's name: the model and one tag per recipe step
ORT_TOLERANCE = 0.01  # torch int8 vs ONNX Runtime QDQ int8: different requantization rounding (module docstring)


def metric(page, label: str) -> tuple[str, str]:
    """(label, value) of the first st.metric whose label starts with ``label``, as the page shows them."""
    m = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return (m.locator('[data-testid="stMetricLabel"]').inner_text().strip(),
            m.locator('[data-testid="stMetricValue"]').inner_text().strip())


def percent(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+) ?%", text)
    assert m, f"not a percentage: {text!r}"
    return float(m.group(1)) / 100


def kilobytes(text: str) -> float:
    m = re.fullmatch(r"([0-9,.]+) KB", text)
    assert m, f"not a size in KB: {text!r}"
    return float(m.group(1).replace(",", ""))


def test_bundle_and_onnx_downloaded_from_explore_measure_and_run_as_the_page_said(server, browser, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from compression_core import resolve_workload
    from compression_core.bundle import load_bundle, read_bundle

    t0 = time.perf_counter()
    page = browser.new_page(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    page.goto(server)  # Explore with its first model, digits-cnn (the offered file's name below says so)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.get_by_text("unstructured (weights)", exact=True).click()  # 50 % by default
    wait_idle(page)
    choose(page, "Quantization kind", "int8 static")
    # the page has caught up with both choices when the offered file is named after them (a loaded machine lags)
    page.get_by_text(f"{STEM}.bundle").first.wait_for(timeout=120_000)
    wait_idle(page)
    t_chosen = time.perf_counter() - t0
    acc_label, acc_text = metric(page, "Accuracy")
    size_label, size_text = metric(page, "File size")
    assert acc_label == "Accuracy", acc_label  # the whole test split: no "(preview)" or "(estimate)" stage
    page_acc, page_kb = percent(acc_text), kilobytes(size_text)

    bundle_button = page.get_by_role("button", name="Download the bundle")
    bundle_button.scroll_into_view_if_needed()
    with page.expect_download(timeout=120_000) as got:
        bundle_button.click()
    assert got.value.suggested_filename == f"{STEM}.bundle"
    bundle = tmp_path / got.value.suggested_filename
    got.value.save_as(bundle)
    # the CLI re-measures the bundle while the page builds the ONNX file (two cores: the export job waits on neither)
    cli_run = subprocess.Popen([sys.executable, "-m", "compression_core", "measure", "--bundle", str(bundle), "--json"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.get_by_role("button", name="Build the ONNX file").click()
        onnx_button = page.get_by_role("button", name="Download the ONNX file")
        onnx_button.wait_for(timeout=300_000)
        wait_idle(page)
        with page.expect_download(timeout=120_000) as got:
            onnx_button.click()
        assert got.value.suggested_filename == f"{STEM}.onnx"
        onnx_file = tmp_path / got.value.suggested_filename
        got.value.save_as(onnx_file)
        t_onnx = time.perf_counter() - t0
        assert not page.evaluate(PROBLEMS_JS)
        save_screenshot(page, tmp_path, "take-home-explore-1280x720")
        stdout, stderr = cli_run.communicate(timeout=300)
    finally:
        if cli_run.poll() is None:
            cli_run.kill()
            cli_run.wait()
    page.close()
    browser_s = time.perf_counter() - t0

    # the CLI: the accuracy and the size the page showed, at the page's rounding
    assert cli_run.returncode == 0, stderr[-2000:]
    cli = json.loads(stdout)
    assert abs(cli["accuracy"] - page_acc) <= 0.00005 + 1e-12, (cli["accuracy"], acc_text)  # "97.50 %": 2 decimals
    assert f"{cli['accuracy'] * 100:.2f} %" == acc_text
    assert abs(cli["size_bytes"] / 1024 - page_kb) <= 0.05 + 1e-9, (cli["size_bytes"], size_text)
    assert f"{cli['size_bytes'] / 1024:,.1f} KB" == size_text
    # the file is that model: the weights the size counts plus the recipe (a few KB of JSON and pickle framing)
    assert cli["size_bytes"] < bundle.stat().st_size < cli["size_bytes"] + 16 * 1024
    recipe, _ = read_bundle(bundle)
    # it records exactly those numbers (dashboard/take_home.py measured_note; read back by the Recipe page's opener)
    assert f"accuracy = {cli['accuracy']!r}, size_bytes = {cli['size_bytes']}" in (recipe.description or "")

    # ONNX Runtime: the downloaded file on the workload's test inputs
    wl = resolve_workload(MODEL)
    x, y = wl.test.x.numpy(), wl.test.y.numpy()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(onnx_file)).graph.node)  # int8
    ort_pred = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(-1)
    ort_acc = float(np.mean(ort_pred == y))
    _, model = load_bundle(bundle)
    with torch.no_grad():
        torch_pred = model(wl.test.x).argmax(-1).numpy()
    agree = float(np.mean(ort_pred == torch_pred))
    print(f"page {acc_text} / {size_text}; CLI {cli['accuracy']:.6f} / {cli['size_bytes']:,} B; bundle file "
          f"{bundle.stat().st_size:,} B; ONNX Runtime accuracy {ort_acc:.6f} on {len(y)} test images, agrees with "
          f"torch on {agree:.4f}; onnx file {onnx_file.stat().st_size:,} B; after {t_chosen:.1f} s the page showed "
          f"the choice, {t_onnx:.1f} s both files, {browser_s:.1f} s the CLI too, {time.perf_counter() - t0:.1f} s all")
    assert abs(ort_acc - page_acc) <= ORT_TOLERANCE, (ort_acc, acc_text)
    assert agree >= 0.98, agree
