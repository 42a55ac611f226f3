"""The versioned recipe: a workload reference, a seed and an ordered list of technique steps, in YAML or JSON.

Every registered technique (``compression_core.technique.register``) is a step kind: the step type is a pydantic
discriminated union on ``kind`` built from the registry, so adding a technique adds a step kind and its JSON Schema
with no hand-kept list. A Markdown file whose YAML front matter is the recipe (SparseML's lesson format) also loads.

``apply_recipe`` is the one path from a recipe to a compressed model: the CLI (``apply``) and the dashboard call it.
"""

from __future__ import annotations

import io as _io
import json
import re
import reprlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from torch import nn

# Importing the technique packages registers their step kinds (the recipe's step union is built from the registry).
from . import distill as _distill  # noqa: F401  (distill, reinit)
from . import prune as _prune  # noqa: F401  (prune_*, shrink, lottery_ticket)
from . import quantize as _quantize  # noqa: F401  (quantize_*, fake_quant)
from . import train as _train  # noqa: F401  (finetune)
from .advisories import collapse
from .errors import CompressionError
from .linear_like import say, tied_partners
from .measure import ModelStats, measure, size_bytes
from .technique import ProgressFn, StepConfig, StepContext, apply_step, registered_configs
from .layer_cache import LayerCache
from .workload import Workload, is_reference, resolve_workload, workload_names

RECIPE_VERSION = 1
MAX_RECIPE_BYTES = 256 * 1024  # a recipe is a few hundred bytes; refuse anything absurd before parsing it
_SUFFIXES = (".yaml", ".yml", ".json", ".md")


class RecipeBase(BaseModel):
    """Fields every recipe has; ``Recipe`` adds ``steps`` typed by the technique registry."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: Literal[1] = Field(default=RECIPE_VERSION, description="recipe schema version")
    model: str = Field(min_length=1, max_length=1000,
                       description="the workload: a registered name (python -m compression_core models), "
                                   "path/to/file.py:attr (relative to the recipe file) or package.module:attr")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds every step (step i gets a derived seed)")
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    _base_dir: str | None = PrivateAttr(default=None)  # the recipe file's folder: relative references resolve there

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        v = v.strip()
        if not is_reference(v) and v not in workload_names():
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(workload_names())}, "
                             "or give path/to/file.py:attr or package.module:attr")
        return v

    @property
    def base_dir(self) -> str | None:
        return self._base_dir

    def workload(self) -> Workload:
        """The workload ``model`` references (a relative file path is relative to the recipe's folder)."""
        return resolve_workload(self.model, base_dir=self._base_dir)


def step_kinds() -> dict[str, type[StepConfig]]:
    """Every registered technique's config class by its ``kind`` tag."""
    return {c.model_fields["kind"].default: c for c in registered_configs()}


@lru_cache(maxsize=8)
def _recipe_class(configs: tuple[type[StepConfig], ...]) -> type[RecipeBase]:
    step_type: Any = Annotated[Union[configs], Field(discriminator="kind")] if len(configs) > 1 else configs[0]

    class Recipe(RecipeBase):
        """A compression recipe: ``model``, ``seed`` and the ordered ``steps`` applied to it (schema version 1)."""

        steps: list[step_type] = Field(default_factory=list, max_length=100,  # type: ignore[valid-type]
                                       description="techniques applied in order; each picks its algorithm by kind")

    return Recipe


def recipe_class() -> type[RecipeBase]:
    """The Recipe model for the techniques registered now (cached per registry contents)."""
    return _recipe_class(tuple(registered_configs()))


def __getattr__(name: str):
    """``Recipe`` is built when asked (``recipe_class()``), so a technique registered after this module was
    imported is a step kind of it too."""
    if name == "Recipe":
        return recipe_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recipe_schema() -> dict:
    """The JSON Schema of a recipe (editors autocomplete recipes from it)."""
    return recipe_class().model_json_schema()


# ---------------------------------------------------------------------------------------------- errors
def _path(loc: tuple, kinds: dict) -> str:
    """``('steps', 2, 'prune_unstructured', 'amount')`` -> ``steps[2].amount`` (the union tag is dropped)."""
    out = ""
    prev_index = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            prev_index = True
            continue
        if prev_index and i >= 2 and loc[0] == "steps" and i == 2 and part in kinds:
            prev_index = False
            continue  # the discriminated union's tag segment
        prev_index = False
        out += f".{part}" if out else str(part)
    return out or "recipe"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 50, 50, 40


def _short(v: Any, limit: int = 60) -> str:
    """A short repr of a user's value, bounded in time and memory (never expands a whole nested input)."""
    s = _REPR.repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _message(err: dict, kinds: dict) -> str:
    """One line for the first pydantic error: what the field must be and what it got."""
    typ, ctx, inp, loc = err["type"], err.get("ctx") or {}, err.get("input"), tuple(err["loc"])
    got = f", got {_short(inp)}"
    known = ", ".join(sorted(kinds))
    if typ in ("union_tag_invalid",):
        return f"unknown step kind {_short(ctx.get('tag', inp))}; known kinds: {known}"
    if typ == "union_tag_not_found":
        return f"a step needs a 'kind'; known kinds: {known}"
    if typ == "model_attributes_type" or typ == "model_type" or typ == "dict_type":
        return f"must be a mapping of fields{got}"
    if typ == "missing":
        return "required field missing"
    if typ == "extra_forbidden":
        cls = None
        if len(loc) >= 3 and loc[0] == "steps" and loc[2] in kinds and len(loc) == 4:
            cls = kinds[loc[2]]
        elif len(loc) == 1:
            cls = recipe_class()
        allowed = f"; allowed: {', '.join(cls.model_fields)}" if cls is not None else ""
        return f"unknown field{allowed}"
    if typ == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}{got}"
    bounds = {"less_than": "<", "less_than_equal": "<=", "greater_than": ">", "greater_than_equal": ">="}
    if typ in bounds:
        key = {"less_than": "lt", "less_than_equal": "le", "greater_than": "gt", "greater_than_equal": "ge"}[typ]
        return f"must be {bounds[typ]} {ctx.get(key)}{got}"
    if typ in ("too_long", "too_short"):
        return err["msg"].replace("List", "list").replace("Value", "value").lower() + (got if typ == "too_short" else "")
    if typ == "value_error":
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    if typ.startswith("int_") or typ == "int_from_float":
        return f"must be an integer{got}"
    if typ.startswith("float_") or typ == "finite_number":
        return f"must be a number{got}"
    if typ.startswith("bool_"):
        return f"must be true or false{got}"
    if typ.startswith("string_"):
        return f"must be a string{got}" if typ == "string_type" else f"{err['msg'].lower()}{got}"
    if typ in ("list_type", "tuple_type", "set_type"):
        return f"must be a list{got}"
    return f"{err['msg'].lower()}{got}"


def validation_error_line(e: ValidationError) -> str:
    """The first error of a pydantic ValidationError as ``field.path: problem`` (one line)."""
    kinds = step_kinds()
    errs = e.errors(include_url=False)
    first = errs[0]
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return f"{_path(tuple(first['loc']), kinds)}: {_message(first, kinds)}{more}"


# ----------------------------------------------------------------------------------------------- loading
def parse_recipe(data: Any) -> RecipeBase:
    """A Recipe from already-parsed data (a dict), with one-line errors."""
    cls = recipe_class()
    if isinstance(data, cls):
        return data
    if isinstance(data, RecipeBase):
        data = data.model_dump()
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise CompressionError(f"recipe: must be a mapping with version, model, seed and steps; got {kind}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise CompressionError(validation_error_line(e)) from None
    except RecursionError:
        raise CompressionError("recipe: nested too deeply") from None


def _front_matter(text: str, source: str) -> tuple[str, int]:
    """The YAML between the leading ``---`` lines of a Markdown lesson, and its first line number offset."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise CompressionError(f"{source}: a Markdown recipe must start with '---' YAML front matter")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return "\n".join(lines[1:i]), 1
    raise CompressionError(f"{source}: front matter opened with '---' on line 1 is never closed")


MAX_YAML_DEPTH = 50  # a recipe nests 4 levels; refuse absurd nesting before building it
MAX_YAML_NODES = 5_000  # a recipe has a few hundred nodes; stops PyYAML's (slow, pure-Python) scanner early


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``: an "alias bomb" of a few hundred bytes expands to
    hundreds of millions of items), and bounds nesting depth and node count while composing, so parsing a recipe
    is linear in its size."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise CompressionError(f"YAML aliases (*name) are not allowed in a recipe (line {mark.line + 1}); "
                                   "write the values out")
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise CompressionError(f"too many YAML nodes (over {MAX_YAML_NODES:,}) for a recipe")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise CompressionError(f"YAML nested too deeply (over {MAX_YAML_DEPTH} levels) for a recipe")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _json_depth_ok(text: str) -> bool:
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best <= MAX_YAML_DEPTH


def _parse_text(text: str, source: str, fmt: str) -> Any:
    offset = 0
    if fmt == "md":
        text, offset = _front_matter(text, source)
    if fmt == "json":
        if not _json_depth_ok(text):
            raise CompressionError(f"{source}: JSON nested too deeply (over {MAX_YAML_DEPTH} levels) for a recipe")
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise CompressionError(f"{source}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except CompressionError as e:
        raise CompressionError(f"{source}: {e}") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise CompressionError(f"{source}: a value cannot be read ({_short(str(e), 120)})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1 + offset}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CompressionError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise CompressionError(f"{source}: YAML nested too deeply") from None


def _exists(path) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a file
        return False


def _is_dir(path) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def load_recipe(source: str | Path | dict) -> RecipeBase:
    """A Recipe from a file path (``.yaml``/``.yml``/``.json``/``.md`` front matter), YAML/JSON text, or a dict.

    YAML is read with ``yaml.safe_load`` only (no object construction). Every problem is one CompressionError line.
    """
    if isinstance(source, (dict, RecipeBase)):
        return parse_recipe(source)
    looks_like_path = isinstance(source, Path) or (
        isinstance(source, str) and "\n" not in source and not source.lstrip().startswith("{")
        and len(source) <= 4096 and (source.lower().endswith(_SUFFIXES) or _exists(source) or ": " not in source)
    )
    if looks_like_path:
        path = Path(source)
        label = str(path)
        suffix = path.suffix.lower()
        if _is_dir(path):
            raise CompressionError(f"{label}: is a directory, not a recipe file; give one of its .yaml files")
        if not _exists(path):
            hint = "" if suffix else " (did you mean a .yaml file?)"
            raise CompressionError(f"{label}: no such recipe file{hint}")
        if suffix not in _SUFFIXES:
            raise CompressionError(f"{label}: unknown recipe file type {suffix or '(none)'!r}; use .yaml, .yml, .json or .md")
        try:
            if path.stat().st_size > MAX_RECIPE_BYTES:
                raise CompressionError(f"{label}: too large for a recipe (over {MAX_RECIPE_BYTES:,} bytes)")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CompressionError(f"{label}: no such recipe file") from None
        except IsADirectoryError:
            raise CompressionError(f"{label}: is a directory, not a recipe file") from None
        except UnicodeDecodeError:
            raise CompressionError(f"{label}: not UTF-8 text") from None
        except OSError as e:
            raise CompressionError(f"{label}: cannot read: {e.strerror or e}") from None
        data = _parse_text(text, label, {"json": "json", "md": "md"}.get(suffix[1:], "yaml"))
        recipe = parse_recipe(data)
        recipe._base_dir = str(path.resolve().parent)
        return recipe
    elif isinstance(source, str):
        if len(source) > MAX_RECIPE_BYTES or len(source.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
            raise CompressionError(f"recipe: too large (over {MAX_RECIPE_BYTES:,} bytes)")
        fmt = "md" if source.lstrip().startswith("---") and "\n---" in source.lstrip()[3:] else "yaml"
        data = _parse_text(source, "recipe", fmt)
    else:
        raise CompressionError(f"recipe: expected a path, YAML/JSON text or a dict, got {type(source).__name__}")
    return parse_recipe(data)


def recipe_to_dict(recipe: RecipeBase) -> dict:
    """Plain data (JSON types) of a recipe, with every step's defaults filled in."""
    data = recipe.model_dump(mode="json")
    _drop_default_nones(data, type(recipe))
    for step, cfg in zip(data.get("steps", []), recipe.steps):  # type: ignore[attr-defined]
        _drop_default_nones(step, type(cfg))
    return data


def _drop_default_nones(d: dict, cls: type[BaseModel]) -> None:
    """Leave out ``key: null`` where null is the field's default (reads back the same, reads better)."""
    for key in [k for k, v in d.items() if v is None]:
        f = cls.model_fields.get(key)
        if f is not None and f.default is None:
            del d[key]


def recipe_to_yaml(recipe: RecipeBase) -> str:
    """The recipe as YAML text (keys in schema order) that ``load_recipe`` reads back to an equal recipe."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)


def recipe_to_json(recipe: RecipeBase) -> str:
    return json.dumps(recipe_to_dict(recipe), indent=2)


# ---------------------------------------------------------------------------------------------- applying
@dataclass(frozen=True)
class StepReport:
    """What one step did: the layers whose tensors changed (or that appeared/disappeared) and how long it took."""

    index: int
    kind: str
    touched: list[str]
    seconds: float
    notes: str = ""
    advice: tuple[str, ...] = ()  # the step's own one-line notes (StepContext.note), also in ``notes``

    def to_json_dict(self) -> dict:
        return {"index": self.index, "kind": self.kind, "touched": list(self.touched),
                "seconds": round(self.seconds, 4), "notes": self.notes}


@dataclass
class RecipeResult:
    """The compressed model, its measurements before and after, and a report per step."""

    recipe: RecipeBase
    model: nn.Module
    before: ModelStats | None
    after: ModelStats | None
    steps: list[StepReport] = field(default_factory=list)
    # one line each a user should act on: the workload's notes (inputs cast, outputs reduced), the steps' notes
    # (e.g. a budget met on the calibration split but not on the test split) and a collapse (compression_core.advisories)
    advisories: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return {
            "recipe": recipe_to_dict(self.recipe),
            "before": self.before.to_json_dict() if self.before is not None else None,
            "after": self.after.to_json_dict() if self.after is not None else None,
            "steps": [s.to_json_dict() for s in self.steps],
            "advisories": list(self.advisories),
        }


def step_seed(recipe_seed: int, index: int) -> int:
    """A distinct, reproducible seed for step ``index`` of a recipe seeded with ``recipe_seed``."""
    return (int(recipe_seed) * 1_000_003 + 7919 * (index + 1)) % (2**31 - 1)


def _own_states(model: nn.Module) -> dict[str, tuple[str, list]]:
    """Per module (named for a user: private ``_packed_params`` children fold into their layer): its type and its own
    state (references to its tensors, not copies: techniques never mutate their input, so a snapshot stays valid)."""
    out: dict[str, tuple[str, list]] = {}
    for name, module in model.named_modules():
        own: dict = {}
        module._save_to_state_dict(own, "", True)  # the tensors themselves: an unchanged one compares by identity
        if not own:
            continue
        if name == "":  # tensors owned by the root (a ViT's position embedding): report them by tensor name
            for key, value in own.items():
                out[key] = (type(value).__name__, [(key, value)])
            continue
        layer = ".".join(p for p in name.split(".") if not p.startswith("_")) or name
        prev = out.get(layer, ("", []))
        out[layer] = (prev[0] + type(module).__name__, prev[1] + list(own.items()))
    return out


def _same_value(a: Any, b: Any) -> bool:
    """Two state values hold the same data (plain tensors compared in place; anything else by its saved bytes)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not (a.is_quantized or b.is_quantized):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    bufs = []
    for v in (a, b):
        buf = _io.BytesIO()
        torch.save(v, buf)
        bufs.append(buf.getvalue())
    return bufs[0] == bufs[1]


def _same_state(a: tuple[str, list] | None, b: tuple[str, list] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a[0] != b[0] or [k for k, _ in a[1]] != [k for k, _ in b[1]]:
        return False
    return all(_same_value(x, y) for (_, x), (_, y) in zip(a[1], b[1]))


def touched_layers(before: dict[str, tuple[str, list]], after: dict[str, tuple[str, list]]) -> list[str]:
    """Layers whose type or tensors differ between two ``_own_states`` snapshots, in model order."""
    names = list(after) + [n for n in before if n not in after]
    return [n for n in names if not _same_state(before.get(n), after.get(n))]


def growth_note(before: nn.Module, after: nn.Module, before_bytes: int, after_bytes: int) -> str:
    """The report line of a step whose file grew (no step may return a larger file silently), with why."""
    untied = sorted(set(tied_partners(before)) - set(tied_partners(after)))
    if getattr(after, "is_onnx_runtime_model", False):
        why = "the ONNX file holds float tensors and graph framing that outweigh what its quantized layers saved"
    elif untied:
        why = f"the tied weights of {', '.join(untied)} are now stored separately"
    elif any(getattr(m, "fake_quant_bits", None) for m in after.modules()):
        why = "simulated quantization keeps the float weights and adds its scales"
    else:
        why = "what it adds (scales, zero points, masks, packing and their framing) outweighs what it saved"
    return (f"the file grew {before_bytes:,} -> {after_bytes:,} bytes ({after_bytes / max(before_bytes, 1):.3f}x): "
            f"{why}")


def _prefix_error(msg: str, index: int, cfg: StepConfig) -> str:
    """``targets: unknown layer ...`` from a handler -> ``steps[2].targets: unknown layer ...``."""
    m = re.match(r"([A-Za-z_][\w]*)((?:\[\d+\]|\.[\w]+)*)\s*:", msg)
    if m and m.group(1) in type(cfg).model_fields:
        return f"steps[{index}].{msg}"
    return f"steps[{index}] ({cfg.kind}): {msg}"


def _run_steps(
    recipe: RecipeBase, model: nn.Module, wl: Workload, replay: bool, progress: ProgressFn | None, reports: list | None,
    layers: LayerCache | None = None,
) -> nn.Module:
    steps = list(recipe.steps)  # type: ignore[attr-defined]
    run = layers.run() if layers is not None else None
    n = max(len(steps), 1)
    size = None  # bytes of the model's file before the next step (reports: a step whose file grows says so)
    for i, cfg in enumerate(steps):
        seed = step_seed(recipe.seed, i)

        def report(frac: float, msg: str, i: int = i, kind: str = cfg.kind) -> None:
            if progress is not None:
                progress((i + frac) / n, f"step {i + 1}/{len(steps)} {kind}: {msg}")

        ctx = StepContext(data=wl, seed=seed, progress=report, replay=replay)
        snapshot = _own_states(model) if reports is not None else None
        before_model = model
        if reports is not None and not replay and size is None:
            size = size_bytes(model)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        try:
            model = run.step(model, cfg, ctx) if run is not None else apply_step(model, cfg, ctx)
        except CompressionError as e:
            raise CompressionError(_prefix_error(str(e), i, cfg)) from None
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as e:  # a combination a technique cannot handle: one line, never a traceback
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise CompressionError(
                f"steps[{i}] ({cfg.kind}): cannot be applied here ({type(e).__name__}: {first})"
            ) from None
        seconds = time.perf_counter() - t0
        if reports is not None and not replay:
            grown = size_bytes(model)
            if grown > size and not any("file grew" in n for n in ctx.notes):  # unless the step said it itself
                say(ctx, growth_note(before_model, model, size, grown))
            size = grown
        if reports is not None:
            touched = touched_layers(snapshot, _own_states(model))  # type: ignore[arg-type]
            notes = "; ".join((["replay"] if replay else []) + ctx.notes)
            reports.append(StepReport(i, cfg.kind, touched, seconds, notes, tuple(ctx.notes)))
        report(1.0, "done")
    return model


def validate_recipe(recipe: RecipeBase | str | Path | dict) -> RecipeBase:
    """Parse and check a recipe without training: build its model and replay every step's structural change
    (layer names resolved, shapes checked). Returns the Recipe; raises a one-line CompressionError."""
    recipe = load_recipe(recipe) if not isinstance(recipe, RecipeBase) else recipe
    wl = recipe.workload()
    _run_steps(recipe, wl.model, wl, replay=True, progress=None, reports=None)
    return recipe


_BASELINES: dict[tuple[int, int, int], tuple[Workload, ModelStats]] = {}


def baseline_stats(wl: Workload, batch_size: int = 1, threads: int = 1) -> ModelStats:
    """The workload's uncompressed model measured without latency (deterministic, so cached per process)."""
    key = (id(wl), batch_size, threads)
    if key not in _BASELINES:  # the workload is kept alive with its stats, so its id is never reused
        _BASELINES[key] = (wl, measure(wl.model, wl, name=wl.name, batch_size=batch_size, threads=threads,
                                       with_latency=False))
    return _BASELINES[key][1]


def apply_recipe(
    recipe: RecipeBase | str | Path | dict,
    progress: ProgressFn | None = None,
    measure_batch_size: int = 1,
    with_latency: bool = True,
    measure_before: bool = True,
    measure_after: bool = True,
    threads: int = 1,
    replay: bool = False,
    train_threads: int | None = 1,
    workload: Workload | None = None,
    layers: LayerCache | None = None,
) -> RecipeResult:
    """Apply ``recipe`` to a copy of its workload's model and measure it before and after (``workload`` overrides
    the recipe's reference, e.g. one the caller already built).

    Deterministic: torch is seeded with a per-step seed derived from ``recipe.seed`` before each step, so the same
    recipe gives the same accuracy and size_bytes. ``measure_before=False`` / ``with_latency=False`` skip work the
    caller does not show (the dashboard's previews); before-stats without latency are cached per process.
    Steps run with ``train_threads`` intra-op threads (default 1): float sums depend on the thread count, so a
    fixed count makes results identical between processes and machines (and 1 thread is fastest on these tiny
    models); None leaves torch's setting alone. ``layers``: a ``LayerCache`` of the workload's model: per-layer steps
    take the layers they change from it (the same result, built without copying the whole model; ``layer_cache``).
    """
    recipe = load_recipe(recipe) if not isinstance(recipe, RecipeBase) else recipe
    wl = workload if workload is not None else recipe.workload()
    before = None
    if measure_before:
        if with_latency:
            before = measure(wl.model, wl, name=wl.name, batch_size=measure_batch_size, threads=threads)
        else:
            before = baseline_stats(wl, measure_batch_size, threads)
    reports: list[StepReport] = []
    old_threads = torch.get_num_threads()
    if train_threads is not None:
        torch.set_num_threads(train_threads)
    try:
        model = _run_steps(recipe, wl.model, wl, replay=replay, progress=progress, reports=reports, layers=layers)
    finally:
        torch.set_num_threads(old_threads)
    after = None
    if measure_after:
        try:
            after = measure(model, wl, name=recipe.name or f"{wl.name} (recipe)",
                            batch_size=measure_batch_size, threads=threads, with_latency=with_latency)
        except CompressionError:
            raise
        except Exception as e:
            raise CompressionError(f"measure: the compressed model cannot be measured ({type(e).__name__}: "
                                   f"{(str(e).splitlines() or [''])[0][:300]})") from None
    advisories = list(getattr(wl, "notes", ()))
    advisories += [f"steps[{r.index}] ({r.kind}): {n}" for r in reports for n in r.advice]
    if after is not None:
        line = collapse(before, after, wl)
        if line:
            advisories.append(line)
    return RecipeResult(recipe, model, before, after, reports, advisories)


__all__ = [
    "Recipe", "RecipeBase", "RecipeResult", "StepReport", "apply_recipe", "baseline_stats", "load_recipe", "parse_recipe",
    "recipe_class", "recipe_schema", "recipe_to_dict", "recipe_to_json", "recipe_to_yaml", "step_kinds",
    "step_seed", "touched_layers", "validate_recipe", "validation_error_line",
]
