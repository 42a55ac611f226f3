"""compression_core.disk_cache: content keys, atomic hash-checked entries, a damaged entry ignored and rebuilt."""

from __future__ import annotations

import torch
from torch import nn

from compression_core import disk_cache as dc


def test_round_trip_and_keys(tmp_path):
    c = dc.DiskCache("unit", root=tmp_path)
    key = dc.digest("model", {"b": 1, "a": [1, 2]})
    assert key == dc.digest("model", {"a": [1, 2], "b": 1})  # dict order does not matter
    assert c.load(key) is None
    t = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "ids": torch.tensor([[1, 2]], dtype=torch.long)}
    assert c.save(key, t, {"metric": 0.5, "rows": [1, 2]}) is not None
    tensors, meta = c.load(key)
    assert meta == {"metric": 0.5, "rows": [1, 2]}
    assert torch.equal(tensors["x"], t["x"]) and torch.equal(tensors["ids"], t["ids"])
    assert not list(tmp_path.rglob(".tmp-*"))  # no temporary file left behind


def test_model_digest_follows_content():
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    b = nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert dc.model_digest(a) == dc.model_digest(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert dc.model_digest(a) != dc.model_digest(b)
    assert dc.tensor_digest({"a": torch.zeros(2)}) != dc.tensor_digest({"a": torch.zeros(2, dtype=torch.float64)})


def test_damaged_entry_is_ignored_and_rebuilt(tmp_path):
    c = dc.DiskCache("unit", root=tmp_path)
    key = dc.digest("k")
    built = []

    def build():
        built.append(1)
        return {"w": torch.ones(3)}, {"n": 3}

    assert c.get_or_build(key, build)[2] is False
    assert c.get_or_build(key, build)[2] is True and len(built) == 1
    path = c.path(key)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(raw))
    assert c.load(key) is None and c.rejected == 1 and not path.exists()
    tensors, meta, hit = c.get_or_build(key, build)
    assert not hit and len(built) == 2 and meta == {"n": 3} and torch.equal(tensors["w"], torch.ones(3))
    # an entry written for another key and renamed into place (with a matching hash) is refused too
    other = dc.digest("other")
    c.save(other, {"w": torch.zeros(3)}, {"n": 0})
    c.path(other).replace(path)
    c.path(other).with_suffix(".sha256").replace(path.with_suffix(".sha256"))
    assert c.load(key) is None


def test_disabled_and_unwritable(tmp_path, monkeypatch):
    c = dc.DiskCache("unit", root=tmp_path / "file")
    (tmp_path / "file").write_text("not a folder")
    key = dc.digest("x")
    assert c.save(key, {}, {"a": 1}) is None  # cannot be written: no error, only no speed-up
    monkeypatch.setenv(dc.CACHE_ENV, "off")
    c2 = dc.DiskCache("unit", root=tmp_path / "ok")
    assert c2.save(key, {}, {"a": 1}) is None and c2.load(key) is None
