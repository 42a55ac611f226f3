"""The trust boundary: the one validator of every model reference a browser can send.

The command line trusts its user (``python -m compression_core apply recipe.yaml`` imports the ``file.py:attr`` its
user named). The dashboard does not trust its users: a browser may only choose among the workloads the person who
started the server named, i.e. the library's registered names plus the ``--workload REF`` flags after ``--`` on the
``streamlit run`` command line (a file reference also in its absolute form, which is what a recipe exported from the
dashboard records). Recipe uploads, search results loaded into Explore, restored settings, the class challenge, job
payloads: every reference is checked here, against that list, BEFORE anything is imported or called; anything else
is refused in one line naming the listed models. A listed reference is only ever resolved to a ``Workload`` (a
registered factory or the operator's own ``--workload``); nothing a student wrote is imported or called.

    check_model_reference(ref) -> ref          # or raises Refused (one line)
    check_recipe(recipe) -> dict               # YAML/JSON/front-matter text or a dict; never read as a file path
    check_job(kind, payload)                   # at submit time, in the server process (the worker trusts the server)
    listed_models() -> list[str]               # what a browser may name
    trusted() -> bool; banner() -> str | None  # ``--trust-uploads``: any reference (said on every page)

Pages never check on their own: they call this module (the state package's workload loader, the Recipe page's
upload, the job runner's ``submit`` and the Search page call it). The library's own resolution rules are unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from compression_core.errors import CompressionError

TRUST_FLAG = "--trust-uploads"
MAX_REFERENCE_CHARS = 1000  # the recipe schema's own limit on ``model``


class Refused(CompressionError):
    """A reference (or a recipe naming one) the server does not list: one line (a ``CompressionError``, so the
    pages' ``one_line`` shows it as is)."""

    def __init__(self, msg: str) -> None:
        super().__init__(" ".join(str(msg).split()))


# ----------------------------------------------------------------------------------------------- server flags
def _argv(argv: list[str] | None) -> list[str]:
    return sys.argv[1:] if argv is None else argv


def trusted(argv: list[str] | None = None) -> bool:
    """True when the server was started with ``--trust-uploads`` (after ``--`` on ``streamlit run``): any reference a
    browser sends is resolved, as on the command line. Off by default."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument(TRUST_FLAG, action="store_true")
    args, _ = p.parse_known_args(_argv(argv))
    return bool(args.trust_uploads)


def banner(argv: list[str] | None = None) -> str | None:
    """The warning every page shows while ``--trust-uploads`` is on (None when off)."""
    if not trusted(argv):
        return None
    return ("This server runs with --trust-uploads: any model reference in an uploaded recipe (a file on this "
            "server, any Python module) is imported and run. Use it only among people you trust; restart without "
            "the flag for a class.")


def cli_references(argv: list[str] | None = None) -> list[str]:
    """The ``--workload REF`` arguments given after ``--`` on the ``streamlit run`` command line, in order."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--workload", action="append", default=[])
    args, _ = p.parse_known_args(_argv(argv))
    return [r.strip() for r in args.workload if r.strip()]


# ----------------------------------------------------------------------------------------------- the list
def listed_models(argv: list[str] | None = None) -> list[str]:
    """What a browser may name: the library's registered names, then each ``--workload`` reference in the form the
    dashboard lists it (a file path made absolute, as ``resolve_workload`` records it). Nothing is imported."""
    from compression_core.workload import canonical_reference, workload_names

    out = list(workload_names())
    for ref in cli_references(argv):
        try:
            canon = canonical_reference(ref)
        except Exception:  # a malformed --workload: listed as written (its own error line is shown elsewhere)
            canon = ref
        if canon not in out:
            out.append(canon)
    return out


def _accepted(argv: list[str] | None) -> set[str]:
    """The listed models plus the ``--workload`` references exactly as the operator typed them."""
    return set(listed_models(argv)) | set(cli_references(argv))


def _shown(value: Any) -> str:
    """A browser's value as one short, printable line (repr escapes newlines and control characters)."""
    text = repr(value) if not isinstance(value, str) else repr(value[:80] + ("..." if len(value) > 80 else ""))
    return text[:100]


def refusal(ref: Any, argv: list[str] | None = None) -> str:
    names = listed_models(argv)
    return (f"model: {_shown(ref)} is not one of this server's models; choose one of {', '.join(names)} "
            "(the person who starts the server adds others with --workload)")


# ----------------------------------------------------------------------------------------------- the checks
def check_model_reference(ref: Any, argv: list[str] | None = None) -> str:
    """``ref`` (stripped) when it names one of the server's listed models, else ``Refused`` in one line naming them.
    Only compares strings: nothing is imported, called, opened or resolved. With ``--trust-uploads`` any non-empty
    reference passes (and is resolved by the library's own rules, as on the command line)."""
    if not isinstance(ref, str) or not ref.strip():
        raise Refused(f"model: expected the name of one of this server's models, got {_shown(ref)}; choose one of "
                       f"{', '.join(listed_models(argv))}")
    if len(ref) > MAX_REFERENCE_CHARS:
        raise Refused(refusal(ref, argv))
    ref = ref.strip()
    if trusted(argv) or ref in _accepted(argv) or _same_file(ref, argv):
        return ref
    raise Refused(refusal(ref, argv))


def _same_file(ref: str, argv: list[str] | None) -> bool:
    """A file reference spelled differently (``./mine.py:workload``) that names a listed file and attribute. Only
    the path is made absolute (``canonical_reference``: no file is opened, nothing imported)."""
    from compression_core.workload import canonical_reference

    target = ref.rpartition(":")[0]
    if not (target.endswith(".py") or "/" in target) or "\x00" in ref:
        return False
    try:
        return canonical_reference(ref) in set(listed_models(argv))
    except Exception:  # a path the OS cannot make absolute: not listed
        return False


def is_listed(ref: Any, argv: list[str] | None = None) -> bool:
    try:
        check_model_reference(ref, argv)
        return True
    except Refused:
        return False


def check_recipe(recipe: Any, argv: list[str] | None = None) -> dict:
    """A recipe from a browser (YAML/JSON/front-matter text, bytes or a dict) as plain data, validated by the library
    and its ``model`` checked: one line on any problem. Text is only ever parsed as text, never taken for a path on
    the server (the library's ``load_recipe`` reads a one-line string that looks like a path as a file)."""
    from compression_core.recipe import RecipeBase, load_recipe, parse_recipe, recipe_to_dict

    if isinstance(recipe, (bytes, bytearray)):
        try:
            recipe = bytes(recipe).decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("recipe: the file is not UTF-8 text") from None
    if isinstance(recipe, dict):
        model = recipe.get("model")
        if model is not None:  # the model first: its refusal is the line a hostile recipe gets
            check_model_reference(model, argv)
        parsed = parse_recipe(recipe)
    elif isinstance(recipe, RecipeBase):
        parsed = recipe
    elif isinstance(recipe, str):
        try:
            parsed = load_recipe(recipe if "\n" in recipe else recipe + "\n")  # with a newline it is never a path
        except CompressionError as e:
            model = _model_line(recipe)  # the library refused it (a bad step, say): a foreign model is the news
            if model is not None and not trusted(argv) and model not in _accepted(argv):
                raise Refused(refusal(model, argv)) from None
            if str(e).startswith("model:"):  # the library's "unknown model" suggests files: name what is listed
                raise Refused(f"{str(e).split(';')[0]}; choose one of {', '.join(listed_models(argv))}") from None
            raise
    else:
        raise CompressionError(f"recipe: expected YAML/JSON text or a mapping, got {type(recipe).__name__}")
    check_model_reference(parsed.model, argv)
    return recipe_to_dict(parsed)


_YAML_MODEL = re.compile(r"^model\s*:\s*(?P<v>[^#\n]*?)\s*(?:#.*)?$", re.MULTILINE)
_JSON_MODEL = re.compile(r'"model"\s*:\s*"(?P<v>[^"\\]{0,1000})"')


def _model_line(text: str) -> str | None:
    """The top-level ``model:`` of recipe text the library refused, found by a plain pattern (for the message only;
    nothing is resolved from it)."""
    m = _YAML_MODEL.search(text) or _JSON_MODEL.search(text)
    if m is None:
        return None
    v = m.group("v").strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1]
    return v or None


def check_job(kind: str, payload: Any, argv: list[str] | None = None) -> None:
    """A job's payload, checked in the server process before it is queued: every ``model`` must be listed and every
    ``recipe`` must be a recipe (text or mapping, never a path) naming a listed model."""
    if not isinstance(payload, dict):
        return  # the diagnostic kinds take plain values; no kind resolves a reference from anything but a dict
    if "model" in payload:
        check_model_reference(payload["model"], argv)
    if "recipe" in payload:
        check_recipe(payload["recipe"], argv)


__all__ = ["MAX_REFERENCE_CHARS", "Refused", "TRUST_FLAG", "banner", "check_job", "check_model_reference",
           "check_recipe", "cli_references", "is_listed", "listed_models", "refusal", "trusted"]
