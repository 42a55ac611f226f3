"""Issue 14: a user's own model through every surface (library, CLI, recipes, bundles), references, bad input."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from compression_core import CompressionError, Workload, measure, resolve_workload
from compression_core import inputs as I
from compression_core.cli import main
from compression_core.sensitivity import Evaluator

ROOT = Path(__file__).resolve().parent.parent

# A workload file written the way a user writes one, outside the repository: a small residual CNN on sklearn's
# digits, trained for a few seconds on first use.
USER_FILE = textwrap.dedent('''
    from pathlib import Path

    import torch
    from torch import nn
    from sklearn.datasets import load_digits
    from compression_core import Workload

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn(self.conv(x)))  # residual add

    class ResNetish(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)
            self.block = Block(8)
            self.fc = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(self.block(torch.relu(self.stem(x))).flatten(1))

    def workload():
        d = load_digits()
        x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16
        y = torch.tensor(d.target)
        torch.manual_seed(0)
        model = ResNetish()
        weights = Path(__file__).with_name("my_net.pt")  # trained once, on first use
        if weights.exists():
            model.load_state_dict(torch.load(weights, weights_only=True))
        else:
            opt = torch.optim.Adam(model.parameters(), 3e-3)
            for _ in range(4):
                for i in range(0, 1400, 64):
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
                    opt.step()
            torch.save(model.state_dict(), weights)
        return Workload(name="user-resnet", model=model.eval(), train=(x[:1400], y[:1400]), test=(x[1400:], y[1400:]))
''')


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("user_project")  # outside the repository
    (d / "my_net.py").write_text(USER_FILE)
    (d / "recipe.yaml").write_text("version: 1\nmodel: my_net.py:workload\nseed: 0\nsteps:\n"
                                   "  - kind: prune_unstructured\n    amount: 0.5\n    include_classifier: true\n")
    resolve_workload(f"{d / 'my_net.py'}:workload", cache=False)  # trains and saves my_net.pt once
    return d


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "compression_core", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


# ------------------------------------------------------------------------------------------------ the record
def test_workload_defaults_and_one_line_errors():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    wl = Workload(name="w", model=model, train=(x, y), test=(x[:10], y[:10]))
    assert len(wl.calib) > 0 and wl.output_layer == "2" and wl.metric_name == "accuracy"
    for kwargs, field in [(dict(name="", model=model, test=(x, y)), "name"),
                          (dict(name="w", model="nope", test=(x, y)), "model"),
                          (dict(name="w", model=model, test=(x, y[:3])), "test"),
                          (dict(name="w", model=model, test=x), "test"),
                          (dict(name="w", model=model, test=(x, y), classifier="fc9"), "classifier")]:
        with pytest.raises(CompressionError) as e:
            Workload(**kwargs)
        assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_agreement_metric_needs_no_labels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    wl = Workload(name="w", model=model, test=torch.randn(40, 4), metric="agreement")
    s = measure(model, wl, with_latency=False)
    assert s.metric == "agreement" and s.accuracy == 1.0


def test_custom_metric_is_used_everywhere():
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    wl = Workload(name="w", model=model, test=(x, y), metric=lambda out, t: 0.25)
    assert measure(model, wl, with_latency=False).accuracy == 0.25


class TokenModel(nn.Module):
    """Embedding fed integer token ids, and a dict input (input_ids + attention_mask) passed as kwargs."""

    def __init__(self, vocab: int = 5000):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)  # (B, T, 16)
        return self.fc(h.sum(1) / attention_mask.sum(1, keepdim=True))


def test_dict_and_integer_inputs_are_never_cast():
    torch.manual_seed(0)
    ids = torch.randint(3000, 5000, (20, 6))  # ids above 2048 are not representable exactly in fp16
    x = {"input_ids": ids, "attention_mask": torch.ones(20, 6, dtype=torch.long)}
    model = TokenModel()
    wl = Workload(name="tok", model=model, test=x, metric="agreement")
    assert I.cast_floats(x, torch.float16)["input_ids"].dtype == torch.long
    ref = I.call(model, x)
    half = copy.deepcopy(model).half()
    out = I.call(half, x)  # reads the wrong embedding rows if the ids were cast to fp16
    assert out.shape == ref.shape == (20, 2)
    assert (out.float() - ref).abs().max().item() < 1e-2
    s = measure(model, wl, with_latency=False)
    assert s.params == sum(p.numel() for p in model.parameters()) and s.accuracy == 1.0


def test_modules_owning_weights_and_children_are_counted():
    enc = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), nn.Flatten(), nn.Linear(16 * 4, 3))
    wl = Workload(name="enc", model=enc, test=torch.randn(8, 4, 16), metric="agreement")
    s = measure(enc, wl, with_latency=False)
    assert s.params == sum(p.numel() for p in enc.parameters())


class PaddedSequential(nn.Sequential):
    """A Sequential subclass with its own forward: the sensitivity prefix cache must not bypass it."""

    def forward(self, x):
        return super().forward(x * 2.0)


def test_sensitivity_cache_respects_a_sequential_subclass_forward():
    torch.manual_seed(0)
    model = PaddedSequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(64, 4)
    y = model(x).argmax(1)
    ev = Evaluator(model, x, y)
    with torch.no_grad():
        model[2].weight.mul_(0.5)  # argmax unchanged by a positive scale only if the forward is honoured
        model[2].bias.zero_()
    assert ev.accuracy("2") == ev.accuracy()


# ------------------------------------------------------------------------------------------------ references
@pytest.mark.slow
def test_references_resolve_by_file_module_and_name(user_dir, monkeypatch):
    monkeypatch.chdir(user_dir)
    wl = resolve_workload("my_net.py:workload")
    assert wl.name == "user-resnet" and wl.reference == f"{user_dir / 'my_net.py'}:workload"
    assert resolve_workload("digits-cnn").name == "digits-cnn"
    monkeypatch.syspath_prepend(str(user_dir))
    assert resolve_workload("my_net:workload").name == "user-resnet"


@pytest.mark.parametrize("ref, needle", [
    ("missing.py:workload", "no such workload file"),
    ("my_net.py:nothing", "has no attribute 'nothing'"),
    ("my_net.py:Block", "failed"),
    ("bad.py:workload", "forward fails on its test inputs"),
    ("notamodel.py:thing", "not a compression_core.Workload"),
    ("no_such_model_name", "unknown 'no_such_model_name'"),
])
@pytest.mark.slow
def test_bad_references_are_one_line_and_exit_2(user_dir, ref, needle):
    (user_dir / "bad.py").write_text(
        "import torch\nfrom torch import nn\nfrom compression_core import Workload\n"
        "workload = Workload(name='bad', model=nn.Linear(3, 2), test=(torch.randn(5, 4), torch.zeros(5).long()))\n")
    (user_dir / "notamodel.py").write_text("thing = 42\n")
    before = sorted(p.name for p in user_dir.iterdir())
    r = cli(["measure", "--model", ref, "--json"], user_dir)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert sorted(p.name for p in user_dir.iterdir() if p.name != "__pycache__") == \
        [n for n in before if n != "__pycache__"]


# ------------------------------------------------------------------------------------------------ every surface
@pytest.mark.slow
def test_user_workload_through_every_cli_command(user_dir, tmp_path):
    m = cli(["measure", "--model", "my_net.py:workload", "--json"], user_dir)
    assert m.returncode == 0, m.stderr
    base = json.loads(m.stdout)
    assert base["params"] == 80 + 584 + 16 + 5130 and base["metric"] == "accuracy" and base["accuracy"] > 0.8

    elsewhere = tmp_path / "elsewhere"  # the recipe's relative model path resolves against the recipe's folder
    elsewhere.mkdir()
    bundle = tmp_path / "m.bundle"
    a = cli(["apply", str(user_dir / "recipe.yaml"), "--json", "--no-latency", "--save-model", str(bundle)], elsewhere)
    assert a.returncode == 0, a.stderr
    applied = json.loads(a.stdout)
    assert applied["after"]["nonzero_params"] < 0.6 * applied["before"]["nonzero_params"]

    mb = cli(["measure", "--bundle", str(bundle), "--json"], elsewhere)  # the bundle recorded an absolute reference
    assert mb.returncode == 0, mb.stderr
    again = json.loads(mb.stdout)
    assert again["accuracy"] == applied["after"]["accuracy"] and again["size_bytes"] == applied["after"]["size_bytes"]

    s = cli(["sensitivity", "--model", "my_net.py:workload", "--json"], user_dir)
    assert s.returncode == 0, s.stderr
    assert {c["name"] for c in json.loads(s.stdout)["layers"]} == {"stem", "block.conv"}  # classifier left alone

    ad = cli(["advise", "--model", "my_net.py:workload", "--json"], user_dir)
    assert ad.returncode == 0, ad.stderr
    assert json.loads(ad.stdout)["model"] == "user-resnet"

    onnx_path = tmp_path / "m.onnx"
    e = cli(["export", str(bundle), "--onnx", str(onnx_path)], elsewhere)
    assert e.returncode == 0, e.stderr
    assert onnx_path.stat().st_size > 1000

    ls = cli(["models", "--workload", "my_net.py:workload", "--json"], user_dir)
    assert ls.returncode == 0, ls.stderr
    assert "user-resnet" in [r["name"] for r in json.loads(ls.stdout)]


def test_library_never_imports_the_samples():
    hits = [str(p) for p in (ROOT / "compression_core").rglob("*.py") if "sample_models" in p.read_text()]
    assert hits == []


def test_validation_and_bundle_loading_never_train(tmp_path, monkeypatch):
    from compression_core import apply_recipe, load_bundle, save_bundle, validate_recipe
    import compression_core.train as train

    recipe = {"version": 1, "model": "digits-mlp", "seed": 0,
              "steps": [{"kind": "prune_unstructured", "amount": 0.5}, {"kind": "finetune", "epochs": 1}]}
    result = apply_recipe(recipe, with_latency=False)
    save_bundle(tmp_path / "b.pt", result.recipe, result.model)

    def boom(*a, **k):
        raise AssertionError("trained during validation or bundle loading")

    monkeypatch.setattr(train, "fine_tune", boom)
    validate_recipe(recipe)
    _, model = load_bundle(tmp_path / "b.pt")
    assert measure(model, resolve_workload("digits-mlp"), with_latency=False).accuracy == result.after.accuracy


def _venv_seeing_this_interpreters_packages(venv: Path) -> Path:
    """A fresh venv (its python returned) that sees this interpreter's installed packages (torch, streamlit, ...) but
    neither the checkout nor its editable install. Made without system site packages plus a .pth file listing this
    interpreter's site-packages: from inside a venv, ``--system-site-packages`` would give the *base* interpreter's
    packages (no torch there), so this works alike from a system interpreter, a venv and a conda env. The .pth lists
    plain directories, so the editable install's own .pth hook is not run: only the wheel provides the project."""
    import site
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        ours.append(site.getusersitepackages())
    dirs = list(dict.fromkeys(p for p in ours if os.path.isdir(p)))
    Path(purelib, "_this_interpreters_packages.pth").write_text("\n".join(dirs) + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built as a wheel (offline, no build isolation) and installed into a fresh venv: (venv, environment
    without PYTHONPATH)."""
    tmp = tmp_path_factory.mktemp("pip-install")
    venv = tmp / "venv"
    python = _venv_seeing_this_interpreters_packages(venv)
    src = tmp / "src"  # the checkout without build outputs: a stale build/lib never reaches the wheel
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv",
                                                             ".hypothesis", ".benchmarks", "*.sqlite3*"))
    wheels = tmp / "wheels"
    # this interpreter's setuptools, else its base interpreter's: the setuptools a venv bundles (65 on Python 3.11)
    # is too old to build a wheel without the `wheel` package, and offline nothing newer can be fetched
    for builder in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", sys.executable)]):
        build = [builder, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                 "--disable-pip-version-check", "-w", str(wheels), str(src)]
        r = subprocess.run(build, capture_output=True, text=True, timeout=300, cwd=tmp)
        if r.returncode == 0:
            break
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(wheels.glob("compression_lab-*.whl"))
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
           "--disable-pip-version-check", str(wheel)]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=300, cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
def test_pip_install_gives_a_working_console_script(installed, tmp_path):
    venv, env = installed
    out = subprocess.run([str(venv / "bin" / "compression-lab"), "models", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names = [row["name"] for row in json.loads(out.stdout)]
    assert "digits-cnn" in names
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sample_models, compression_core; "
                            "print(sample_models.__file__); print(sample_models.weights_path('digits-cnn').is_file())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = where.stdout.split()
    assert str(venv) in lines[0] and lines[1] == "True"  # the installed copy, weights shipped as package data


def _health(port: int) -> int | None:
    """HTTP status of the Streamlit server's health endpoint on loopback, None when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.mark.slow
def test_installed_dashboard_command_serves_the_app_from_any_folder(installed, tmp_path):
    """``compression-lab dashboard --port N -- ...`` from a folder outside the checkout starts the installed app
    (``streamlit run`` in a subprocess), which answers on /_stcore/health; terminating the command stops the server.
    The installed app's pages run (AppTest on the installed files), the Distillation lesson from its shipped data."""
    import signal
    import socket
    import time

    venv, env = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "compression-lab"), "dashboard", "--port", str(port), "--",
                                 "--job-workers", "1"], cwd=elsewhere, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        status = None
        deadline = time.monotonic() + 240  # a bound on start-up (imports on a busy machine), not a speed check
        while status != 200 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            status = _health(port)
        assert status == 200, log.read_text()[-3000:]
        proc.terminate()  # SIGTERM to the command: it passes it on to the server and returns when the server ends
        assert proc.wait(60) is not None
        assert _health(port) is None, "the server outlived the command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything left of the session (never the test's own processes)
        except (ProcessLookupError, PermissionError):
            pass
    check = ("import importlib.util, pathlib; from streamlit.testing.v1 import AppTest; "
             "app = pathlib.Path(importlib.util.find_spec('dashboard').origin).parent / 'app.py'; print(app); "
             "at = AppTest.from_file(str(app), default_timeout=240); at.run(); assert not at.exception, at.exception; "
             "at.switch_page('pages/learn_distillation.py').run(); assert not at.exception, at.exception; "
             "assert not at.error, [e.value for e in at.error]; "
             "assert any('50 labelled images' in m.value for m in at.markdown); print('ok')")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", check], cwd=elsewhere, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.split()[-1] == "ok", (r.stdout[-2000:], r.stderr[-3000:])
    assert str(venv) in r.stdout.split()[0]  # the installed copy, not the checkout


def test_dashboard_command_without_the_dashboard_is_one_line_and_exit_2(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dashboard" else real(name, *a))
    assert main(["dashboard", "--port", "8600"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dashboard: not installed" in err and "\n" not in err
    assert main(["dashboard", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
