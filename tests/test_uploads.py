"""Hostile uploads: size limits, YAML that tries to build objects, bundles that carry pickled code."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import torch

from compression_core import CompressionError
from compression_core import cli
from compression_core.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, MAX_BUNDLE_BYTES, load_bundle, read_bundle
from compression_core.recipe import MAX_RECIPE_BYTES, load_recipe

ROOT = Path(__file__).resolve().parent.parent
GOOD = "version: 1\nmodel: digits-mlp\nseed: 0\nsteps:\n- kind: prune_unstructured\n  amount: 0.5\n"


def one_line_error(fn, *args) -> str:
    with pytest.raises(CompressionError) as e:
        fn(*args)
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def cli_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


class Boom:
    """Pickles as a call to os.system: a loader that runs pickled code creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!!python/object/new:os.system"])
def test_yaml_object_payload_is_refused_and_runs_nothing(tmp_path, capsys, tag):
    marker = tmp_path / "pwned"
    text = f"version: 1\nmodel: digits-mlp\nsteps: {tag} [\"touch {marker}\"]\n"
    msg = one_line_error(load_recipe, text)
    assert "malformed YAML" in msg or "python/object" in msg
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    cli_error(capsys, ["validate", str(path)])
    assert not marker.exists()


def test_pickle_carrying_code_is_refused_as_a_bundle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bundle.pt"
    torch.save({"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "recipe": "{}",
                "state_dict": {"fc1.weight": Boom(marker)}}, evil)
    assert b"system" in evil.read_bytes()  # the payload really is in the file
    msg = one_line_error(load_bundle, evil)
    assert "refused" in msg and "weights_only" in msg
    cli_error(capsys, ["measure", "--bundle", str(evil)])
    cli_error(capsys, ["export", str(evil), "--onnx", str(tmp_path / "out.onnx")])
    assert not marker.exists()
    assert not (tmp_path / "out.onnx").exists()


def test_a_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save({"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "recipe": "{}",
                "state_dict": {"m": torch.nn.Linear(2, 2)}}, path)
    assert "refused" in one_line_error(read_bundle, path)


def test_recipe_size_limit(tmp_path, capsys):
    assert MAX_RECIPE_BYTES <= 256 * 1024
    padding = "#" * (MAX_RECIPE_BYTES + 1)
    assert "too large" in one_line_error(load_recipe, GOOD + padding + "\n")
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + padding + "\n")
    assert "too large" in cli_error(capsys, ["validate", str(big)])
    wide = "description: " + "\u00e9" * (MAX_RECIPE_BYTES // 2 + 10) + "\n"  # fewer chars than the limit, more bytes
    assert "too large" in one_line_error(load_recipe, GOOD + wide)
    load_recipe(GOOD + "#" * 1000 + "\n")  # a normal recipe with comments still loads


def test_bundle_size_limit_is_checked_before_reading(tmp_path):
    path = tmp_path / "huge.bundle.pt"
    with open(path, "wb") as f:  # sparse file: no disk used, but its size is over the limit
        f.truncate(MAX_BUNDLE_BYTES + 1)
    assert "too large" in one_line_error(load_bundle, path)


def test_streamlit_caps_uploads():
    """The server's cap (enforced before a page sees the file) is the largest uploader's limit, a bundle's, in both
    config files; each uploader states and enforces its own smaller limit (tests/test_take_home.py)."""
    for path in (ROOT / ".streamlit" / "config.toml", ROOT / "dashboard" / ".streamlit" / "config.toml"):
        cfg = tomllib.loads(path.read_text())
        assert cfg["server"]["maxUploadSize"] == MAX_BUNDLE_BYTES // 2**20, path  # MB


def test_oversized_recipe_upload_is_one_error_line():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/recipe.py").run()
    big = (GOOD + "#" * (MAX_RECIPE_BYTES + 10) + "\n").encode()
    at.file_uploader(key="r_upload").set_value(("big.yaml", big, "application/x-yaml")).run()
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value and "at most" in at.error[0].value
    evil = b"version: 1\nmodel: digits-mlp\nsteps: !!python/object/apply:os.system [\"true\"]\n"
    at.file_uploader(key="r_upload").set_value(("evil.yaml", evil, "application/x-yaml")).run()
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
