"""The quantize family's planners for ``compression_core.cost``: the state_dict each technique's modules save.

dynamic int8 (torch.ao's packed Linear: per-tensor int8 weight, float bias, a scale and a zero point; an LSTM/GRU's
packed objects taken from the same module quantized once), int4/int8 weight-only (codes packed two per byte,
float16 group scales), int8 embeddings (int8 rows, float32 row scales), fp16/bf16 (every float module tensor),
fake quant (the weight kept as ``weight_orig``, simulated bits) and static int8 / QAT (the int8 graph's layout,
taken once per model and layer selection from a structure-only replay: traced and converted without calibration,
training or evaluation, then given the planned shapes).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cost_layout import Entry, entry_of
from . import cost_steps as S
from .cost_steps import NotEstimated, Plan, _values, derive, is_conv1d, tied_partners
from .errors import CompressionError
from .targets import resolve_targets
from .quantize._common import select_layers
from torch.ao.nn.quantized.dynamic import Linear
from torch.ao.quantization import default_dynamic_qconfig
from .quantize.dynamic import DYNAMIC_TYPES
from .quantize.ao_eager import quantize_dynamic as ao_dynamic
from .quantize.static import STATIC_TYPES
from .quantize._common import affine_params, qrange, quantize_values
from .quantize.int4 import _FP16_TINY, _group
from .quantize._common import resolve_overrides
from .quantize.int4 import _group, pack_int4
from .quantize.groupwise import pack_int3
from .quantize._common import require_split
from .quantize.groupwise import rtn
from .quantize._common import fake_quantize_weight, require_split, resolve_overrides
from .quantize.fakequant import FAKE_TYPES


def _int8_names(p: Plan, cfg, ctx, types, technique: str, swapped: bool = False) -> list[str]:

    if getattr(cfg, "engine", "torch") != "torch":
        raise NotEstimated(f"{technique} with engine='onnxruntime' ships an ONNX file, whose size is not computed")
    names = select_layers(p.model, cfg, ctx, types, technique, swapped=swapped)
    p.need(technique, names, reshape=False)
    return names


def _refuse_if_not_smaller(before: int, after: int, names: list[str], technique: str, hint: str) -> None:
    if after >= before:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise CompressionError(f"targets: {technique} can make only {shown} int8 here and the file would not shrink "
                               f"({before:,} -> {after:,} bytes): the rest of the weights stay float; {hint}")


def _module_keys(p: Plan, name: str) -> list[str]:
    """The layout keys a module saves itself (not its children's)."""
    return [k for k in p.layout.entries if k.rpartition(".")[0] == name]


def _set_meta(p: Plan, name: str, entries: dict[str, dict]) -> None:
    """Module versions of ``name`` (and its new children) as the technique's module saves them."""
    meta = OrderedDict()
    for k, v in p.layout.metadata.items():
        if k == name or k.startswith(name + "."):
            if k == name:
                meta.update((f"{name}.{c}" if c else name, dict(m)) for c, m in entries.items())
            continue
        meta[k] = v
    p.layout.metadata = meta


# -------------------------------------------------------------------------------------------- dynamic int8
@lru_cache(maxsize=1)
def _dynamic_linear_versions() -> dict[str, dict]:

    state = Linear(4, 2).state_dict()
    return {k: dict(v) for k, v in state._metadata.items()}


def _dynamic_codes(v: torch.Tensor) -> torch.Tensor:
    """The int8 codes ``torch.ao``'s dynamic quantization stores for a float weight (its default weight observer)."""

    obs = default_dynamic_qconfig.weight()
    obs(v.float())
    scale, zp = obs.calculate_qparams()
    return torch.quantize_per_tensor(v.float(), float(scale), int(zp), torch.qint8).int_repr()


def _pruned_code_zeros(p: Plan, w: Entry) -> int | None:
    """Zero codes of a weight magnitude-pruned by one layer-wise step, without its values: pruning removes the
    smallest |w| and keeps the largest (the per-tensor scale), and a code is zero for the smallest |w| too, so the
    zeros are the larger of the two prefixes (the base weight's zero codes: counted once per model)."""
    base = p.base.entries.get(w.ckey[0]) if w.ckey and len(w.ckey) == 2 and w.ckey[1][0] == "l1" else None
    if base is None or w.zeros is None or w.masked != w.zeros or base.stored_zeros() != 0:
        return None
    return max(w.zeros, derive(base, ("dynamic",), _dynamic_codes).stored_zeros())


def quantize_dynamic(p: Plan, cfg, ctx) -> None:

    names = _int8_names(p, cfg, ctx, DYNAMIC_TYPES, "quantize_dynamic", swapped=True)
    if not names:
        raise CompressionError("targets: quantize_dynamic selected no Linear/LSTM/GRU layer; name some in targets")
    before = p.layout.size_bytes()
    for name in names:
        mod = p.model.get_submodule(name)
        if isinstance(mod, nn.Linear) or is_conv1d(mod):
            w, b = p.entry(f"{name}.weight"), p.layout.entries.get(f"{name}.bias")
            t = is_conv1d(mod)  # made an nn.Linear first: its weight is the transpose
            qw = derive(w, ("dynamic",), (lambda v: _dynamic_codes(v.t())) if t else _dynamic_codes,
                        shape=w.shape[::-1] if t else w.shape, dtype=torch.qint8, qscheme="tensor", zero_point=0,
                        fixed=True, as_param=False, masked=0, pid=None, zeros=_pruned_code_zeros(p, w))
            if t:
                p.linearized.add(name)
            qb = None if b is None else b.changed(as_param=True, fixed=True, tensor=None, zeros=b.zeros)
            p.splice(_module_keys(p, name), OrderedDict([
                (f"{name}.scale", Entry((), torch.float32, layer=name, role="scale", fixed=True, zeros=0)),
                (f"{name}.zero_point", Entry((), torch.int64, layer=name, role="zero_point", fixed=True, zeros=1)),
                (f"{name}._packed_params.dtype", torch.qint8),
                (f"{name}._packed_params._packed_params", (qw, qb))]))
            _set_meta(p, name, _dynamic_linear_versions())
        else:
            _dynamic_rnn(p, name, mod)
        p.swapped[name] = "quantize_dynamic"
    _refuse_if_not_smaller(before, p.layout.size_bytes(), names, "quantize_dynamic",
                           "quantize_static runs convolutions in int8, quantize_embedding the embedding tables")


def _dynamic_rnn(p: Plan, name: str, mod: nn.Module) -> None:
    """A torch.ao dynamic LSTM/GRU saves packed TorchScript objects: take them from a copy quantized once (their
    pickled size depends on the shapes only); its weights count as int8 codes, its biases as they are."""

    holder = p.info.cached(("dynamic_rnn", name), lambda: ao_dynamic(_holder(copy.deepcopy(mod)), ["m"]))
    state = holder.state_dict()
    new = OrderedDict((f"{name}{k[1:]}", v if not isinstance(v, torch.Tensor) else entry_of(f"{name}{k[1:]}", v, False))
                      for k, v in state.items())
    old = _module_keys(p, name)
    for k in old:
        e = p.entry(k)
        p.phantoms[k] = derive(e, ("dynamic",), _dynamic_codes, masked=0, bits=8) if e.role.startswith(
            "weight") else e
    p.splice(old, new)
    _set_meta(p, name, {k[2:] if k.startswith("m.") else "": dict(v) for k, v in state._metadata.items() if k})
    p.dense_flops.add(name)


def _holder(m: nn.Module) -> nn.Module:
    holder = nn.Module()
    holder.add_module("m", m)
    return holder


# ------------------------------------------------------------------------------------------ static int8 / QAT
def quantize_static(p: Plan, cfg, ctx) -> None:

    names = _int8_names(p, cfg, ctx, STATIC_TYPES, cfg.kind)
    if p.swapped:
        raise NotEstimated(f"{cfg.kind} after {', '.join(sorted(set(p.swapped.values())))} is not estimated")
    replay = p.info.static_replay(cfg)  # raises the step's own CompressionError
    before = p.layout.size_bytes()
    trained = cfg.kind == "quantize_qat"
    out = OrderedDict()
    for k, v in replay.layout.entries.items():
        if isinstance(v, tuple):
            layer = k[: -len("._packed_params._packed_params")]
            out[k] = tuple(_mapped(p, f"{layer}.{('weight', 'bias')[i]}", e, trained) if isinstance(e, Entry) else e
                           for i, e in enumerate(v))
        else:
            out[k] = _mapped(p, k, v, trained) if isinstance(v, Entry) else v
    p.layout.entries, p.layout.metadata = out, OrderedDict(replay.layout.metadata)
    for n in names:
        p.swapped[n] = cfg.kind
    p.static = replay
    p.why_unknown = f"{cfg.kind}: the int8 codes of weights pruned, shrunk or trained before it, and its calibrated " \
        "zero points, are known after applying"
    _refuse_if_not_smaller(before, p.layout.size_bytes(), names, cfg.kind,
                           "quantize_dynamic runs LSTM/GRU/Linear in int8, quantize_embedding the embedding "
                           "tables, and engine='onnxruntime' whole attention blocks")


def _mapped(p: Plan, key: str, e: Entry, trained: bool) -> Entry:
    """A replayed int8-graph tensor given the planned float tensor it comes from: its shape (after shrink), and its
    values when those are the replay's own (the same weights, untouched, not trained)."""
    src = key if key in p.layout.entries else key.replace(".module.", ".")  # eager fallback: QuantWrapper.module
    now = p.layout.entries.get(src)
    if now is None and key.endswith(".bias"):  # a bias made by folding a BatchNorm into a bias-free conv
        w = p.layout.entries.get(src[: -len("bias")] + "weight")
        if w is not None and w.shape[0] != e.shape[0]:
            return e.changed(shape=(w.shape[0],), values=None, pcount=w.shape[0] if e.pcount else 0)
        return e if w is None or (w is p.base.entries.get(w.layer + ".weight") and not trained) else \
            e.changed(values=None)
    if now is None:  # made by the conversion (scales and zero points): values from calibration, unknown here
        return e if e.qscheme or not e.dtype.is_floating_point else e.changed(values=None)
    if not e.qscheme and not e.fixed and now.dtype == e.dtype and now.shape == e.shape:  # left float: as planned
        return now if not trained else now.changed(values=None, tensor=now.tensor, share=now.share)
    shape = now.shape
    if len(shape) == 2 and src.endswith(".weight") and _is_conv1d_at(p, src[: -len(".weight")]):
        shape = shape[::-1]  # a Conv1D made an nn.Linear first: its weight is the transpose
    if shape == e.shape:
        return e if now is p.base.entries.get(src) and not trained else e.changed(values=None, masked=0)
    return e.changed(shape=shape, values=None, masked=0, pcount=now.pcount if e.pcount else 0)


def _is_conv1d_at(p: Plan, name: str) -> bool:
    try:
        return is_conv1d(p.model.get_submodule(name))
    except AttributeError:
        return False


# --------------------------------------------------------------------------------------------------- int4
def _weight_only(v: torch.Tensor, bits: int, group_size: int | None, symmetric: bool):
    """(codes (out, padded) int8, zero points (out, G) int8, scales (out, G) fp16), as ``int4._WeightOnlyLinear``."""

    w = v.float()
    g, n = _group(w.shape[1], group_size)
    wp = F.pad(w, (0, g * n - w.shape[1])).reshape(w.shape[0], n, g)
    qmin, qmax = qrange(bits)
    if symmetric:
        scale = (wp.abs().amax(dim=2) / qmax).clamp(min=_FP16_TINY).half()
        zp = torch.zeros_like(scale, dtype=torch.int8)
    else:
        s, z = affine_params(wp.amin(dim=2), wp.amax(dim=2), bits, eps=_FP16_TINY)
        scale, zp = s.half(), (z - 2 ** (bits - 1)).to(torch.int8)
    q = quantize_values(wp, scale.float().unsqueeze(2), zp.float().unsqueeze(2), qmin, qmax).to(torch.int8)
    return q.reshape(w.shape[0], g * n), zp, scale


def _packed_bits(p: Plan, cfg, ctx, technique: str) -> dict[str, int]:

    default = getattr(cfg, "bits", 4)
    names = _int8_names(p, cfg, ctx, (nn.Linear,), technique)
    bits = {n: default for n in names}
    bits.update(resolve_overrides(p.model, cfg.overrides, (nn.Linear,), technique))
    if not bits:
        raise CompressionError(f"targets: {technique} selected no Linear/Conv1D layer; name some in targets")
    p.need(technique, list(bits), reshape=False)
    return bits


def _packed_layer(p: Plan, name: str, b: int, group_size: int | None, symmetric: bool, codes_of, tag,
                  input_scale: bool = False) -> None:
    """A Linear (or Conv1D) as ``int4._WeightOnlyLinear`` stores it: bias, codes packed (int4 two per byte, int3
    eight per three bytes, int8 one per byte), float16 group scales, int8 zero points when asymmetric, AWQ's float16
    input scale. ``codes_of(weight (out, in))`` -> (codes, zero points, scales), or None when calibration decides."""

    w, bias = p.entry(f"{name}.weight"), p.layout.entries.get(f"{name}.bias")
    t = is_conv1d(p.model.get_submodule(name))  # packed as the equivalent nn.Linear: (out, in)
    out, inp = w.shape[::-1] if t else w.shape
    g, n = _group(inp, group_size)
    memo: dict = {}
    if t:
        p.linearized.add(name)

    def codes():
        if "q" not in memo:
            memo["q"] = codes_of(w.values().t() if t else w.values())
        return memo["q"]

    def pattern():  # zero where the dequantized weight is: codes equal to their zero point
        q, zp, _ = codes()
        return (q.reshape(out, n, g) - zp.unsqueeze(2)).reshape(out, n * g)[:, :inp]

    def stored():
        q = codes()[0]
        if b == 4:
            return pack_int4(q)
        if b == 3:

            return pack_int3(F.pad(q, (0, -q.shape[1] % 8)))
        return q

    known = w.values is not None and codes_of is not None
    ckey = None if w.ckey is None or not known else w.ckey + (tag,)
    shape, dtype = {4: ((out, g * n // 2), torch.uint8), 3: ((out, 3 * -(-g * n // 8)), torch.uint8)}.get(
        b, ((out, g * n), torch.int8))
    new = OrderedDict()
    if bias is not None:
        new[f"{name}.bias"] = bias
    new[f"{name}.qweight"] = Entry(shape, dtype, layer=name, pcount=out * inp, role="weight", bits=b,
                                   eshape=(out, inp), values=stored if known else None,
                                   pvalues=pattern if known else None, ckey=ckey, cache=w.cache)
    new[f"{name}.scale"] = Entry((out, n), torch.float16, layer=name, role="scale", zeros=0)
    if not symmetric:
        new[f"{name}.zero_point"] = Entry((out, n), torch.int8, layer=name, role="zero_point",
                                          values=(lambda: codes()[1]) if known else None,
                                          ckey=None if ckey is None else ckey + ("zero_point",), cache=w.cache)
    if input_scale:  # AWQ: a float16 scale per input, from calibration
        new[f"{name}.input_scale"] = Entry((inp,), torch.float16, layer=name, role="input_scale")
    p.splice(_module_keys(p, name), new)


def quantize_int4(p: Plan, cfg, ctx) -> None:
    for name, b in _packed_bits(p, cfg, ctx, "quantize_int4").items():
        _packed_layer(p, name, b, cfg.group_size, cfg.symmetric,
                      lambda v, b=b: _weight_only(v, b, cfg.group_size, cfg.symmetric),
                      ("int4", b, cfg.group_size, cfg.symmetric))
        p.swapped[name] = "quantize_int4"


def quantize_weight_only(p: Plan, cfg, ctx) -> None:
    """Weight-only int8/int4/int3: the file's shapes do not depend on the method; the codes of GPTQ and AWQ (and
    AWQ's input scales) come from calibration, so their zeros are unknown here; round-to-nearest's are computed."""

    if cfg.method != "rtn" and cfg.engine == "torch":
        require_split(ctx, "calib", "method", f"method={cfg.method!r}")

    def rtn_codes(v, b):
        q = rtn(v, b, cfg.group_size, cfg.symmetric)
        return q.codes, q.zero_point if q.zero_point is not None else torch.zeros_like(q.scale, dtype=torch.int8), \
            q.scale

    for name, b in _packed_bits(p, cfg, ctx, "quantize_weight_only").items():
        _packed_layer(p, name, b, cfg.group_size, cfg.symmetric,
                      (lambda v, b=b: rtn_codes(v, b)) if cfg.method == "rtn" else None,
                      ("weight_only", b, cfg.group_size, cfg.symmetric), input_scale=cfg.method == "awq")
        p.swapped[name] = "quantize_weight_only"
    if cfg.method != "rtn":
        p.why_unknown = f"quantize_weight_only: {cfg.method}'s codes come from calibration: known after applying"


# ---------------------------------------------------------------------------------------- int8 embeddings
def _embedding_codes(v: torch.Tensor) -> torch.Tensor:
    w = v.float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    return torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)


def quantize_embedding(p: Plan, cfg, ctx) -> None:
    names = resolve_targets(p.model, cfg.targets, cfg.ignore, types=(nn.Embedding,), field="targets")
    if not names:
        raise CompressionError("targets: quantize_embedding found no nn.Embedding layer in this model; it applies to "
                               "models with embedding tables (token ids in)")
    p.need("quantize_embedding", names)
    partners = tied_partners(p.model)
    for name in names:
        mod = p.model.get_submodule(name)
        if name in p.swapped:
            continue  # quantized together with an embedding it is tied to
        if mod.max_norm is not None:
            raise CompressionError(f"targets: {name!r} renormalises looked-up rows (max_norm={mod.max_norm}), which "
                                   "int8 codes cannot do; leave it out with ignore")
        w = p.entry(f"{name}.weight")
        q = derive(w, ("embedding",), _embedding_codes, dtype=torch.int8, bits=8, masked=0, pid=None)
        scale = Entry((w.shape[0],), torch.float32, layer=name, role="scale", zeros=0)
        for partner in partners.get(name, []):  # tied: the partner reads the same int8 codes (stored once)
            other = p.model.get_submodule(partner)
            if isinstance(other, nn.Linear) and other.weight is mod.weight:
                new = OrderedDict((k, p.entry(k)) for k in _module_keys(p, partner) if k.endswith(".bias"))
                new.update([(f"{partner}.qweight", q), (f"{partner}.scale", scale)])
                p.splice(_module_keys(p, partner), new)
                p.flop_weight[partner] = q
            elif isinstance(other, nn.Embedding):
                raise NotEstimated(f"quantize_embedding of {name!r} tied to the embedding {partner!r} is not estimated")
            else:
                raise CompressionError(f"targets: {name!r} shares its weight with {partner!r} "
                                       f"({type(other).__name__}, tied), which quantize_embedding cannot make read the "
                                       "same int8 codes; quantizing the table alone would store the matrix twice: "
                                       "leave it out with ignore")
            p.swapped[partner] = "quantize_embedding"
        p.splice(_module_keys(p, name), OrderedDict([(f"{name}.qweight", q), (f"{name}.scale", scale)]))
        p.swapped[name] = "quantize_embedding"


# --------------------------------------------------------------------------------------------- fp16 / bf16
def quantize_half(p: Plan, cfg, ctx) -> None:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[cfg.dtype]
    int8 = sorted({t for t in p.swapped.values() if t in ("quantize_dynamic", "quantize_static", "quantize_qat")})
    if int8:
        raise NotEstimated(f"quantize_half after {', '.join(int8)} is not estimated")
    for k, e in list(p.layout.entries.items()):
        if isinstance(e, Entry) and e.dtype.is_floating_point and not e.fixed and not e.qscheme and e.dtype != dtype:
            p.put(k, derive(e, ("half", cfg.dtype), lambda v: v.to(dtype), dtype=dtype, masked=None, share=e.share,
                            pvalues=None if e.pvalues is None else (lambda f=e.pvalues: f().to(dtype))))


# ----------------------------------------------------------------------------------------------- fake quant
def _pruned_fake_zeros(p: Plan, key: str, w: Entry, fq, how: tuple[int, bool, bool]) -> int | None:
    """Zeros of ``fq(w)`` without computing it, when ``w`` is a base weight ``b`` pruned by an l1 threshold
    (``b * (|b| > cut)``, ``Plan.cuts``) and every scale row keeps its largest magnitude (max |row| > cut): the
    scales are then ``fq(b)``'s, so each kept value rounds as in ``fq(b)`` (elementwise, given the scale) and each
    pruned one is 0. Zeros = the pruned (|b| <= cut, a lookup in the sorted magnitudes kept per model) + the kept
    ones ``fq(b)`` rounds to 0 (a pass over those magnitudes, found once per bit width). None where that does not
    hold (then counted on the computed values)."""
    got = p.cuts.get(key)
    if got is None or got[0] is not w:
        return None
    _, base, cut_of = got
    s = S.sorted_magnitudes(p.info, base)
    cut = cut_of()
    if s is None or cut is None:
        return None
    bits, per_channel, transposed = how

    def rows(v: torch.Tensor) -> torch.Tensor:  # fake_quantize_weight's scale rows (a Conv1D's: its columns)
        v = v.t() if transposed else v
        return v.reshape(v.shape[0], -1) if per_channel else v.reshape(1, -1)

    def build():
        v = base.values()
        zero = fq(v) == 0
        return float(rows(v.abs()).amax(dim=1).min()), v.detach().abs()[zero].reshape(-1)

    smallest_max, zero_mags = p.info.cached(("fake_zero_magnitudes", base.ckey, bits, per_channel, transposed), build)
    if not smallest_max > cut:  # a row loses its largest magnitude: its scale changes
        return None
    return int(np.searchsorted(s, np.float32(cut), side="right")) + int((zero_mags > cut).sum())  # (a float64
    # scalar would make numpy convert the whole array to float64 first)


def fake_quant(p: Plan, cfg, ctx) -> None:

    names = _int8_names(p, cfg, ctx, FAKE_TYPES, "fake_quant")
    bits = {n: cfg.bits for n in names}
    bits.update(resolve_overrides(p.model, cfg.overrides, FAKE_TYPES, "fake_quant"))
    if not bits:
        raise CompressionError("targets: fake_quant selected no Linear/Conv2d layer; name some in targets")
    p.need("fake_quant", list(bits), reshape=False)
    if cfg.activation_bits is not None:
        require_split(ctx, "calib", "activation_bits", "fake_quant with activation_bits")
    per_channel = cfg.weights == "per_channel"
    for name, b in bits.items():
        mod = p.model.get_submodule(name)

        def fq(v, b=b, t=is_conv1d(mod)):  # a Conv1D's (in, out) weight: one scale per output column
            w = v.detach().float()
            return (fake_quantize_weight(w.t(), b, per_channel)[0].t() if t else
                    fake_quantize_weight(w, b, per_channel)[0]).to(v.dtype)

        if isinstance(mod, nn.RNNBase):  # rounded in place
            for k in _module_keys(p, name):
                e = p.entry(k)
                if e.role.startswith("weight"):
                    p.put(k, derive(e, ("fake", b, per_channel), fq, bits=b, masked=None))
                else:
                    p.put(k, e.changed(bits=b))
        else:
            own = _module_keys(p, name)
            w = p.entry(f"{name}.weight")
            new = OrderedDict((k, p.entry(k).changed(bits=b, zeros=p.entry(k).zeros)) for k in own
                              if k != f"{name}.weight")
            tag = ("fake", b, per_channel)
            new[f"{name}.weight_orig"] = w.changed(pvalues=_values(w, fq), bits=b, zeros=w.zeros,
                                                   ckey=None if w.ckey is None else w.ckey + (tag,),
                                                   pzeros=_pruned_fake_zeros(p, f"{name}.weight", w, fq,
                                                                             (b, per_channel, is_conv1d(mod))))
            if cfg.activation_bits is not None:  # the calibrated zero point may be 0: its zero count is unknown
                new[f"{name}.act_scale"] = Entry((), torch.float32, layer=name, role="act_scale", zeros=0)
                new[f"{name}.act_zero_point"] = Entry((), torch.float32, layer=name, role="act_zero_point")
            p.splice(own, new)
        p.simulated.add(name)
        p.swapped[name] = "fake_quant"


__all__ = ["fake_quant", "quantize_dynamic", "quantize_embedding", "quantize_half", "quantize_int4",
           "quantize_static", "quantize_weight_only"]
