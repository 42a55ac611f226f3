"""State dicts of torch.ao int8 models that load with ``torch.load(weights_only=True)``: dynamic LSTM/GRU packed
parameters saved as plain tensors, and the scalar scales and zero points of an int8 graph packed into one vector.
Bundles save and load quantized models through these."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

import torch.ao.nn.quantized.dynamic as _nnqd

from .ao_engine import quiet


def _dynamic_rnns(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _nnqd.modules.rnn.RNNBase)]


def is_dynamic_rnn(module: nn.Module) -> bool:
    return isinstance(module, _nnqd.modules.rnn.RNNBase)


def rnn_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weights and float biases packed inside a dynamically quantized LSTM/GRU, by torch's names."""
    with quiet():
        wb = module._weight_bias()
    return {**wb["weight"], **wb["bias"]}


def safe_state_dict(model: nn.Module, state: dict | None = None) -> dict:
    """``model.state_dict()`` (or the given ``state`` of ``model``) with the packed TorchScript objects of dynamic LSTMs replaced by their tensors.

    Dynamic quantized LSTM/GRU state holds ``torch.ScriptObject`` packed params, which ``torch.load(...,
    weights_only=True)`` refuses; its int8 weights and biases are saved as plain (quantized) tensors instead under
    ``<lstm>._weight_bias.<name>`` and repacked by ``load_safe_state_dict``. Other modules' state is unchanged
    (quantized Linear/Conv state is tensors and tuples, which load with weights_only=True).
    """
    state = model.state_dict() if state is None else state
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix + "_all_weight_values.")]:
            del state[key]
        for wname, t in rnn_weights(rnn).items():
            state[f"{prefix}_weight_bias.{wname}"] = t
    return state


def load_safe_state_dict(model: nn.Module, state: dict) -> nn.Module:
    """Load a ``safe_state_dict`` into a model of the same structure (strict), repacking dynamic LSTM weights."""
    meta = getattr(state, "_metadata", None)  # module versions: quantized modules' loaders depend on them
    state = OrderedDict(state)
    if meta is not None:
        state._metadata = meta  # type: ignore[attr-defined]
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        tag = prefix + "_weight_bias."
        mine = {k[len(tag):]: state.pop(k) for k in [k for k in state if k.startswith(tag)]}
        if mine:
            with quiet():
                rnn.set_weight_bias(mine)
        current = rnn.state_dict()
        for k, v in current.items():
            if k.startswith("_all_weight_values."):
                state[prefix + k] = v
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------ compact scalar state
# An int8 graph keeps a scale and a zero point per activation and per layer as 0-d tensors: dozens of state entries,
# and torch.save spends a record (~0.4-0.6 KB with its alignment) on each. On a small CNN that framing outweighs what
# int8 weights save. The state_dict of a converted model packs them into one float64 vector ``_scalars`` (exact for
# float32 scales and integer zero points) and loading unpacks it by the replayed structure's own keys.
_SCALARS = "_scalars"


def _scalar_keys(state: dict, prefix: str) -> list[str]:
    return [k for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)
            and not v.is_quantized and v.dim() == 0 and (v.is_floating_point() or not v.dtype.is_complex)]


def _pack_scalars(module: nn.Module, state: dict, prefix: str, local_metadata) -> None:
    if not getattr(module, "_pack_scalars", True):
        return
    keys = _scalar_keys(state, prefix)
    if len(keys) < 2:
        return
    state[prefix + _SCALARS] = torch.tensor([float(state[k]) for k in keys], dtype=torch.float64)
    for k in keys:
        del state[k]


def _unpack_scalars(module: nn.Module, state: dict, prefix: str, *args) -> None:
    packed = state.pop(prefix + _SCALARS, None)
    if packed is None:
        return
    module._pack_scalars = False
    try:
        own = module.state_dict(prefix=prefix)
    finally:
        module._pack_scalars = True
    keys = _scalar_keys(own, prefix)
    if len(keys) != packed.numel():  # a different structure: let strict loading name the mismatch
        state[prefix + _SCALARS] = packed
        return
    for k, v in zip(keys, packed.tolist()):
        state[k] = torch.tensor(v, dtype=own[k].dtype)


def compact_scalars(model: nn.Module) -> nn.Module:
    """Save ``model``'s 0-d tensors (scales, zero points) as one ``_scalars`` vector and load them back (hooks on the
    root module, kept by deepcopy)."""
    model._register_state_dict_hook(_pack_scalars)
    model._register_load_state_dict_pre_hook(_unpack_scalars, with_module=True)
    return model


__all__ = ["compact_scalars", "is_dynamic_rnn", "load_safe_state_dict", "rnn_weights", "safe_state_dict"]
