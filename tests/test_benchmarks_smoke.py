"""Every benchmark module imports and offers `--help`/`--json` (they are run by hand, not in CI: timings are noisy)."""

import importlib
from pathlib import Path

import pytest

MODULES = sorted(p.stem for p in (Path(__file__).parent.parent / "benchmarks").glob("*.py")
                 if p.stem not in ("__init__", "common", "local_app", "bert_base_workload"))  # helpers and a workload file


def test_every_benchmark_the_issues_name_exists():
    for name in ("baselines", "pruning", "quantization", "distillation", "dashboard", "sensitivity",
                 "workshop_load", "slimming", "runtimes", "fuzz", "generality", "search", "transformer"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_has_a_main_with_help(name, capsys):
    mod = importlib.import_module(f"benchmarks.{name}")
    assert callable(mod.main)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "--json" in capsys.readouterr().out
