"""Recipes as plain data: what the pages build from their widgets, hash as a cache key, export as YAML and read back
from an upload (validated by the library)."""

from __future__ import annotations

import json

from compression_core.recipe import MAX_RECIPE_BYTES as MAX_RECIPE_UPLOAD_BYTES  # noqa: F401  (the upload's cap)
from compression_core.recipe import parse_recipe, recipe_to_yaml


def recipe_dict(model: str, steps: list[dict], seed: int = 0) -> dict:
    """The recipe as plain data (what is exported, hashed and cached); ``model`` is the workload's reference."""
    return {"version": 1, "model": model, "seed": seed, "steps": steps}


def recipe_key(recipe: dict) -> str:
    """A canonical string of a recipe: the cache key of its results."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def to_yaml(recipe: dict) -> str:
    """The recipe as YAML text through the library's own writer (the very file the CLI reads)."""
    return recipe_to_yaml(parse_recipe(recipe))


def parse_recipe_text(text: str) -> dict:
    """Validate uploaded recipe text (YAML, JSON or Markdown front matter) with the library, its model checked
    against the server's list (``trust.check_recipe``: text is never read as a path); one-line errors."""
    try:
        import trust
    except ModuleNotFoundError:  # pragma: no cover
        from dashboard import trust
    return trust.check_recipe(text)
