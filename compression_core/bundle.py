"""Bundles: one file with a recipe and the compressed model's weights, rebuilt without pickled code.

A bundle is ``torch.save({"format", "format_version", "recipe" (JSON text), "state_dict"})`` written atomically.
It holds tensors and strings only, so it loads with ``torch.load(weights_only=True)``: a file that carries
pickled modules or code is refused, never executed. To rebuild, the recipe's steps are replayed on a fresh sample
model rebuilt through the recorded workload reference (``StepContext(replay=True)``: same structure and shapes, no training), then the saved weights are loaded
over it with ``strict=True``.

The weights are the *shippable* state_dict (pruning masks folded into zeros, as ``measure``'s size_bytes counts
them), so a bundle file is that size plus the recipe text and a few bytes of framing.

Bundles are the one save format (quantized models included): ``load_bundle`` reads a path, the bundle's bytes
(``bundle_bytes``, a download, a database row) or a binary file object (an upload). Given a ``workload``, the
recorded reference need not be known in the loading process (a model saved under a name registered elsewhere).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import IO, Union

import torch
from torch import nn

from .errors import CompressionError
from .io import atomic_write_bytes, shippable_state_dict
from .quantize import load_safe_state_dict, safe_state_dict
from .recipe import RecipeBase, _run_steps, load_recipe, recipe_to_json
from .workload import Workload, canonical_reference, resolve_workload

BUNDLE_FORMAT = "compression-lab-bundle"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # the largest sample model bundle is ~1 MB; refuse absurd files unread
BundleSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]
_ANY_MODEL = "bundle:workload"  # a syntactically valid reference standing in while the caller's workload is used


def bundle_bytes(recipe: RecipeBase, model: nn.Module) -> bytes:
    """The bytes of a bundle of ``recipe`` and ``model`` (what ``save_bundle`` writes)."""
    buf = io.BytesIO()
    torch.save({
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "recipe": recipe_to_json(recipe),
        "workload": canonical_reference(recipe.model, recipe.base_dir),
        "state_dict": _safe_shippable(model),
    }, buf)
    return buf.getvalue()


def _safe_shippable(model: nn.Module) -> dict:
    """The shippable state_dict (masks folded) in a form ``torch.load(weights_only=True)`` accepts."""
    return safe_state_dict(model, shippable_state_dict(model))


def save_bundle(path: str | os.PathLike, recipe: RecipeBase, model: nn.Module) -> int:
    """Write ``recipe`` + ``model``'s shippable weights to ``path`` atomically; returns the bytes written."""
    data = bundle_bytes(recipe, model)
    p = Path(path)
    if p.is_dir():
        raise CompressionError(f"--save-model: {str(p)!r} is a directory; give a file path such as model.bundle.pt")
    try:
        atomic_write_bytes(p, data)
    except OSError as e:
        raise CompressionError(f"--save-model: cannot write {str(p)!r}: {e.strerror or e}") from None
    return len(data)


def _unfold_state_dict(model: nn.Module, shipped: dict) -> dict:
    """The inverse of ``shippable_state_dict`` for ``model``'s structure: a folded ``weight`` fills a pruned
    module's ``weight_orig`` and its non-zeros become ``weight_mask``."""
    target = model.state_dict()
    out: OrderedDict = OrderedDict()
    meta = getattr(shipped, "_metadata", None) or getattr(target, "_metadata", None)
    if meta is not None:  # module versions: quantized modules read their state by format version
        out._metadata = meta  # type: ignore[attr-defined]
    for key in target:
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in target:
            base = key[: -len("_orig")]
            if base in shipped:
                out[key] = shipped[base]
                continue
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in target:
            base = key[: -len("_mask")]
            if base in shipped and isinstance(shipped[base], torch.Tensor):
                out[key] = (shipped[base] != 0).to(target[key].dtype)
                continue
        if key in shipped:
            out[key] = shipped[key]
    for key in shipped:  # keys the structure does not have: load_state_dict(strict=True) names them
        folded = key + "_orig" in target
        if key not in target and not folded:
            out[key] = shipped[key]
    return out


def _label(source: BundleSource) -> str:
    """How errors name a bundle: its path, an upload's file name, or "(bytes)"."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bundle (bytes)"
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return f"bundle {name!r}" if isinstance(name, str) else "bundle (file object)"
    return f"bundle {str(Path(source))!r}"


def _opened(source: BundleSource, label: str):
    """What ``torch.load`` reads: the path, or the bytes in memory (size checked before anything is parsed)."""
    too_large = f"{label}: too large for a bundle (over {MAX_BUNDLE_BYTES // 2**20} MB)"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(MAX_BUNDLE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise CompressionError(f"{label}: open the file in binary mode ('rb'); got {type(data).__name__}")
    else:
        p = Path(source)
        if p.is_file() and p.stat().st_size > MAX_BUNDLE_BYTES:
            raise CompressionError(too_large)
        return p
    if len(data) > MAX_BUNDLE_BYTES:
        raise CompressionError(too_large)
    return io.BytesIO(data)


def read_bundle(source: BundleSource, *, any_model: bool = False) -> tuple[RecipeBase, dict]:
    """The recipe and shippable state_dict stored in a bundle (a path, its bytes or a binary file object; tensors
    and strings only). The recipe's ``model`` is the workload reference the bundle recorded (file paths made
    absolute when it was saved); ``any_model=True`` accepts a reference this process does not know (the caller
    brings the workload)."""
    label = _label(source)
    try:
        stream = _opened(source, label)
        with warnings.catch_warnings():  # torch warns about its own deprecated quantized-tensor rebuilders
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(stream, map_location="cpu", weights_only=True)
    except CompressionError:
        raise
    except FileNotFoundError:
        raise CompressionError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise CompressionError(f"{label}: is a directory") from None
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CompressionError(f"{label}: refused: it is not plain tensors and strings "
                               f"(weights_only load failed: {first})") from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        raise CompressionError(f"{label}: not a Compression Lab bundle ({type(e).__name__}: "
                               f"{(str(e).strip().splitlines() or [''])[0][:200]})") from None
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise CompressionError(f"{label}: not a Compression Lab bundle (no {BUNDLE_FORMAT!r} header); "
                               "write one with save_bundle() or `apply RECIPE --save-model PATH`")
    if raw.get("format_version") != BUNDLE_VERSION:
        raise CompressionError(f"{label}: format_version must be {BUNDLE_VERSION}, got {raw.get('format_version')!r}")
    if not isinstance(raw.get("recipe"), str) or not isinstance(raw.get("state_dict"), dict):
        raise CompressionError(f"{label}: damaged (recipe text or state_dict missing)")
    try:
        recipe = load_recipe_text(raw["recipe"], any_model=any_model)
    except CompressionError as e:
        raise CompressionError(f"{label}: its recipe is invalid: {e}") from None
    ref = raw.get("workload")
    if isinstance(ref, str) and ref and ref != recipe.model:
        recipe = recipe.model_copy(update={"model": ref})
    return recipe, raw["state_dict"]


def load_recipe_text(text: str, *, any_model: bool = False) -> RecipeBase:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompressionError(f"recipe: malformed JSON at line {e.lineno}: {e.msg}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not any_model or not isinstance(model, str):
        return load_recipe(data)
    recipe = load_recipe({**data, "model": _ANY_MODEL})  # the steps are validated; the reference is kept as is
    return recipe.model_copy(update={"model": model})


def load_bundle(source: BundleSource, workload: Workload | None = None) -> tuple[RecipeBase, nn.Module]:
    """(recipe, model) from a bundle (a path, its bytes or a binary file object): the workload's model rebuilt
    through its recorded reference (or the ``workload`` given: then the reference need not be known here), the
    recipe's steps replayed (structure only: nothing trains), the stored weights loaded over it."""
    label = _label(source)
    recipe, shipped = read_bundle(source, any_model=workload is not None)
    try:
        wl = workload if workload is not None else recipe.workload()
    except CompressionError as e:
        raise CompressionError(f"{label}: cannot rebuild its workload {recipe.model!r}: {e}") from None
    model = _run_steps(recipe, wl.model, wl, replay=True, progress=None, reports=None)
    state = _unfold_state_dict(model, shipped)
    try:
        load_safe_state_dict(model, state)  # strict; repacks dynamic LSTM weights
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        first = " ".join(str(e).split())[:300]
        raise CompressionError(f"{label}: its weights do not fit the model its recipe builds "
                               f"({type(e).__name__}: {first})") from None
    return recipe, model.eval()


__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "MAX_BUNDLE_BYTES", "bundle_bytes", "load_bundle", "read_bundle", "save_bundle"]
