"""The README's architecture diagram stays in sync with the code; CONTRIBUTING.md names the real commands."""

import importlib
import inspect
import re
from pathlib import Path

import compression_core.recipe  # noqa: F401  (imports every technique package, so every config is registered)
from compression_core import StepConfig, registered_configs

ROOT = Path(__file__).resolve().parent.parent


def _diagram() -> str:
    blocks = re.findall(r"```mermaid\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "README.md must hold exactly one mermaid diagram"
    return blocks[0]


def _namespaces(text: str) -> dict[str, list[str]]:
    """{namespace: [class names]} of the diagram's ``namespace X { class Y ... }`` blocks."""
    return {ns: re.findall(r"^\s*class (\w+)\s*$", body, re.M)
            for ns, body in re.findall(r"namespace (\w+) \{(.*?)\}", text, re.S)}


def _module(ns: str):
    try:
        return importlib.import_module(f"compression_core.{ns}")
    except ModuleNotFoundError:
        return importlib.import_module(ns)  # sample_models


def test_every_module_and_class_in_the_diagram_exists():
    spaces = _namespaces(_diagram())
    assert len(spaces) >= 8
    for ns, classes in spaces.items():
        mod = _module(ns)
        assert classes, f"namespace {ns} lists no class"
        for cls in classes:
            assert inspect.isclass(getattr(mod, cls, None)), f"{mod.__name__}.{cls} named in the diagram does not exist"


def test_every_registered_technique_is_in_the_diagram_as_a_step_config():
    text = _diagram()
    spaces = _namespaces(text)
    placed = {c: ns for ns, classes in spaces.items() for c in classes}
    for cfg in registered_configs():
        assert cfg.__name__ in placed, f"{cfg.__name__} ({cfg.model_fields['kind'].default}) missing from the diagram"
        assert getattr(_module(placed[cfg.__name__]), cfg.__name__) is cfg
        assert f"StepConfig <|-- {cfg.__name__}" in text
    for line in re.findall(r"StepConfig <\|-- (\w+)", text):  # every drawn subclass really is one
        assert issubclass(getattr(_module(placed[line]), line), StepConfig)


def test_readme_references_and_contributing_commands():
    readme = (ROOT / "README.md").read_text()
    for paper in ("Han", "Frankle & Carbin 2019", "Li, Kadav", "Network Slimming", "Hinton", "Jacob et al. 2018",
                  "Dosovitskiy et al. 2021", "LeCun", "Sixteen Heads"):
        assert paper in readme, paper
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for needle in ("bash scripts/test.sh", "@register", "python -m benchmarks.", "registered_configs"):
        assert needle in contributing, needle
    for bench in re.findall(r"python -m (benchmarks\.\w+)", readme + contributing):
        assert (ROOT / (bench.replace(".", "/") + ".py")).exists(), bench


def test_every_local_file_the_docs_cite_exists():
    """A README that cites a file (``FACTS.md``, ``recipes/x.yaml``) must ship it."""
    for doc in ("README.md", "CONTRIBUTING.md"):
        text = (ROOT / doc).read_text()
        links = re.findall(r"\]\(([^)#]+?)\)", text)
        cited = re.findall(r"`((?:recipes|examples|docs|benchmarks|sample_models|dashboard)/[\w./-]+\.(?:py|yaml|md))`",
                            text)
        bare = re.findall(r"\b([A-Z]+\.md)\b", text)
        for rel in links + cited + bare:
            if rel.startswith(("http://", "https://")):
                continue
            assert (ROOT / rel).exists() or (ROOT / "docs" / rel).exists(), f"{doc} cites {rel}, which is not in the repo"


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text()
    assert "## Code layout" in text, "README.md must describe the code layout (## Code layout)"
    return text.split("## Code layout", 1)[1].split("\n## ", 1)[0]


def test_the_code_layout_names_every_module_and_only_real_ones():
    """The README's layout lists every module of the library and the dashboard (pages aside), and names no file
    that is not there: a split, a move or a new module fails here until the README says where it went."""
    section = _layout_section()
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    on_disk = {p for pkg in ("compression_core", "dashboard") for p in (ROOT / pkg).rglob("*.py")
               if p.name != "__init__.py" and "pages" not in p.parts}
    missing = sorted(str(p.relative_to(ROOT)) for p in on_disk if p.name not in {n.rsplit("/", 1)[-1] for n in named})
    assert missing == [], f"modules not in README's Code layout: {missing}"
    names = {p.name for p in on_disk}
    ghosts = sorted(n for n in named if n.rsplit("/", 1)[-1] not in names and not (ROOT / n).exists())
    assert ghosts == [], f"README's Code layout names files that do not exist: {ghosts}"
