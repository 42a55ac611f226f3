"""tiny-lm: a small GPT-2 decoder language model trained here on chatterbot-corpus's English dialogs; its metric is
perplexity (lower is better), with next-token accuracy beside it.

The model is ``transformers.GPT2LMHeadModel`` built from a ``GPT2Config`` (3 layers x 4 heads, width 128, 64
positions, vocabulary 1,024, dropout 0.2: 0.73 M parameters), so it has GPT-2's ``Conv1D`` layers and its ``lm_head``
tied to the token embedding ``transformer.wte``, as a Hugging Face GPT-2 does. The tokenizer is a byte-level BPE
(GPT-2's scheme) trained here with the ``tokenizers`` package on the train split only and shipped beside the
weights (``weights/tiny-lm.tokenizer.json``); no vocabulary ships offline.

**It is small and it overfits**: the whole corpus is ~900 distinct dialogs (~38 k tokens), far too little text
for a language model. It learns the corpus's phrasing and templates (chatterbot's tech-support dialogs are
templated), not English; generated text is chat-like but often nonsense. That is enough to show what
quantization and pruning do to a language model's perplexity, which is what the sample is for.

Data (fixed, seed 0): every English file of chatterbot-corpus (all 21 topics, ``data.chatterbot_dialogs``), each
dialog its lines joined by newlines and ended by ``<|endoftext|>``; dialogs are de-duplicated (case-insensitive)
and, per topic, shuffled and assigned to test (20%), calibration (10%) and train (the rest), so a dialog is never
in two splits. Each split's token stream is cut into windows of ``SEQ_LEN`` tokens: inputs ``x`` (N, 64) and
targets ``y`` (N, 64), the same windows shifted by one token (every token of the stream is a target once).

>>> wl = workload(); wl.score(wl.model)          # test perplexity: exp(mean cross-entropy per token)
>>> next_token_accuracy(compressed, wl)          # the extra metric "token accuracy": next tokens predicted (top-1)
>>> generate(wl.model, "What is AI?")            # greedy continuation (the Learn page's before / after text)

Train it again with ``python -m sample_models.train --model tiny-lm`` (1 thread, deterministic, a few minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compression_core import inputs as I
from compression_core.io import atomic_write_bytes, state_dict_bytes
from compression_core.train import FineTuneConfig, fine_tune, per_position
from compression_core.workload import Metric, Split, Workload, resolve_workload, top1

from .data import CALIB_FRACTION, SPLIT_SEED, TEST_FRACTION, chatterbot_dialogs
from .hf import transformers_names

NAME = "tiny-lm"
SEQ_LEN = 64  # tokens per window (= the model's positions)
VOCAB = 1024  # BPE vocabulary incl. the end-of-text token
N_LAYER, N_HEAD, N_EMBD = 3, 4, 128
DROPOUT = 0.2  # embeddings, attention and residuals: the corpus is tiny
EOS = "<|endoftext|>"  # id 0: ends every dialog
EPOCHS, LR, BATCH_SIZE, WEIGHT_DECAY, SEED = 20, 2e-3, 8, 0.1, 0  # picked on the calibration split
MAX_PERPLEXITY = 120.0  # python -m sample_models.train fails above this test perplexity
WORKLOAD_LR = 1e-3  # fine-tuning after compression (techniques that train read workload.lr)

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / f"{NAME}.pt"
META_PATH = WEIGHTS_DIR / f"{NAME}.json"
TOKENIZER_PATH = WEIGHTS_DIR / f"{NAME}.tokenizer.json"


# -------------------------------------------------------------------------------------------------- model
def config():
    """The ``transformers.GPT2Config`` of the sample (no key/value cache: the model returns logits only)."""
    (GPT2Config,) = transformers_names("GPT2Config")
    return GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
                      resid_pdrop=DROPOUT, embd_pdrop=DROPOUT, attn_pdrop=DROPOUT, bos_token_id=0, eos_token_id=0,
                      use_cache=False)


def build() -> nn.Module:
    """The architecture with freshly initialised weights (transformers' GPT-2 initialisation), in eval mode."""
    (GPT2LMHeadModel,) = transformers_names("GPT2LMHeadModel")
    return GPT2LMHeadModel(config()).eval()


def load_model() -> nn.Module:
    """The trained model from ``weights/tiny-lm.pt`` (the tied ``lm_head`` is ``transformer.wte``'s tensor)."""
    model = build()
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------------------------------- data
@lru_cache(maxsize=1)
def texts() -> dict[str, tuple[str, ...]]:
    """The fixed splits as dialog texts: ``{"train"|"calib"|"test": (dialog, ...)}`` (see the module doc)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {"train": [], "calib": [], "test": []}
    for topic, convs in chatterbot_dialogs().items():
        dialogs = []
        for conv in convs:
            text = "\n".join(line for line in conv if line)
            if text and text.lower() not in seen:
                seen.add(text.lower())
                dialogs.append(text)
        random.Random(f"{SPLIT_SEED}:{topic}").shuffle(dialogs)
        n_test = round(TEST_FRACTION * len(dialogs))
        n_calib = round(CALIB_FRACTION * len(dialogs))
        out["test"] += dialogs[:n_test]
        out["calib"] += dialogs[n_test:n_test + n_calib]
        out["train"] += dialogs[n_test + n_calib:]
    return {k: tuple(v) for k, v in out.items()}


def data_fingerprint() -> str:
    """sha256 (first 16 hex digits) of the split texts: changes if the corpus or the split rule does."""
    return hashlib.sha256(json.dumps(texts(), sort_keys=True).encode()).hexdigest()[:16]


def train_tokenizer(lines: tuple[str, ...] | list[str]):
    """A byte-level BPE (GPT-2's scheme) of ``VOCAB`` tokens trained on ``lines``, ``EOS`` as id 0 (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # lazy: only to build or read it

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(lines), trainer)
    return tok


@lru_cache(maxsize=1)
def tokenizer():
    """The shipped tokenizer (``weights/tiny-lm.tokenizer.json``), a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer  # lazy: only to build or read it

    return Tokenizer.from_str(TOKENIZER_PATH.read_text(encoding="utf-8"))


def encode(lines: tuple[str, ...] | list[str], tok=None) -> torch.Tensor:
    """One int64 token stream: each text's tokens followed by ``EOS``."""
    tok = tok or tokenizer()
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(list(lines)):
        ids += enc.ids + [eos]
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, seq_len: int = SEQ_LEN) -> Split:
    """Non-overlapping windows of ``stream``: inputs (N, seq_len) and next-token targets (N, seq_len)."""
    n = (int(stream.numel()) - 1) // seq_len
    x = stream[: n * seq_len].reshape(n, seq_len).contiguous()  # (N, T)
    y = stream[1: n * seq_len + 1].reshape(n, seq_len).contiguous()  # (N, T)
    return Split(x, y)


@lru_cache(maxsize=1)
def splits() -> dict[str, Split]:
    """The tokenized splits (cached; shared: do not modify)."""
    tok = tokenizer()
    return {name: windows(encode(lines, tok)) for name, lines in texts().items()}


# ------------------------------------------------------------------------------------------------ metrics
def perplexity_of(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean cross-entropy per target token) of next-token logits (N, T, vocab) against targets (N, T)."""
    ce = F.cross_entropy(*per_position(outputs.float(), targets))
    return float(torch.exp(ce))


PERPLEXITY = Metric("perplexity", perplexity_of, percent=False, higher_is_better=False)


def next_token_accuracy(model: nn.Module, workload: Workload | None = None, n: int | None = None) -> float:
    """The fraction of test tokens that are ``model``'s top-1 next-token prediction (the first ``n`` windows when
    given: a preview); the workload's extra metric."""
    wl = workload if workload is not None else _default_workload()
    x, y = wl.test.x, wl.test.y
    if n is not None:
        x, y = I.head(x, n), y[:n]
    return top1(I.predict(model, x), y)


@lru_cache(maxsize=1)
def _default_workload() -> Workload:
    return resolve_workload(NAME)


@torch.no_grad()
def generate(model: nn.Module, prompt: str, max_new_tokens: int = 40, temperature: float = 0.0,
             seed: int = 0) -> str:
    """``prompt`` continued by ``model`` up to ``max_new_tokens`` tokens or the end of the dialog: greedy by default,
    sampled at ``temperature`` from a generator seeded with ``seed`` otherwise (so the text is reproducible). The
    context is the last ``SEQ_LEN`` tokens; works on any compressed copy that maps token ids to logits."""
    tok = tokenizer()
    eos = tok.token_to_id(EOS)
    ids = tok.encode(prompt).ids or [eos]
    start = len(ids)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            x = torch.tensor([ids[-SEQ_LEN:]], dtype=torch.long)  # (1, T)
            logits = I.call(model, x)[0, -1].float()  # (vocab,)
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                nxt = int(torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=gen))
            if nxt == eos:
                break
            ids.append(nxt)
    finally:
        model.train(was_training)
    return tok.decode(ids[start:])


# ----------------------------------------------------------------------------------------------- workload
def trained_metadata() -> dict:
    return json.loads(META_PATH.read_text()) if META_PATH.exists() else {}


def listing() -> dict:
    """Cheap facts for ``models`` (no model or data loaded)."""
    meta = trained_metadata()
    return {
        "task": "next-token prediction on English chat dialogs, chatterbot-corpus (small: it overfits)",
        "architecture": f"GPT-2 decoder {N_LAYER}x{N_HEAD} heads, d{N_EMBD}, BPE {VOCAB}",
        "architecture_detail": f"transformers GPT2LMHeadModel: {N_LAYER} layers x {N_HEAD} heads, width {N_EMBD}, "
                               f"{SEQ_LEN} positions, byte-level BPE vocabulary of {VOCAB} trained here; Conv1D "
                               "layers, lm_head tied to the token embedding; trained here from scratch",
        "dataset": "chatterbot-corpus (English, all topics)",
        "input": f"token ids, int64 (N, {SEQ_LEN})",
        "input_shape": [SEQ_LEN],
        "num_classes": VOCAB,
        "classifier": "lm_head",
        "metric": "perplexity",
        "percent": False,
        "higher_is_better": False,
        "baseline_metric": meta.get("test_perplexity"),
        "test_items": meta.get("test_windows"),
        "extra_metrics": {"token accuracy": "sample_models.tiny_lm:next_token_accuracy"},
        "tokenizer": TOKENIZER_PATH.name,
    }


def workload() -> Workload:
    """The tiny-lm workload: the trained model, the tokenized train / calib / test windows, perplexity."""
    s = splits()
    return Workload(
        name=NAME, model=load_model(), train=s["train"], calib=s["calib"], test=s["test"], classifier="lm_head",
        metric=PERPLEXITY, description=listing()["task"], build=build, lr=WORKLOAD_LR, seed=SEED, info=listing(),
    )


# ----------------------------------------------------------------------------------------------- training
@torch.no_grad()
def _perplexity(model: nn.Module, split: Split) -> float:
    return perplexity_of(I.predict(model, split.x), split.y)


def train(write: bool = True, verbose: bool = True) -> dict:
    """Train the tokenizer on the train split, then the model from seed 0 (AdamW, cosine schedule, the library's
    ``fine_tune``); writes the weights, the tokenizer and the metadata JSON when ``write``. Deterministic on 1
    thread (``python -m sample_models.train`` sets it)."""
    log = (lambda msg: print(f"  {NAME}: {msg}", file=sys.stderr)) if verbose else (lambda msg: None)
    t0 = time.perf_counter()
    t = texts()
    tok = train_tokenizer(t["train"])
    s = {name: windows(encode(lines, tok)) for name, lines in t.items()}
    log(f"{len(s['train'])} train windows of {SEQ_LEN} tokens, vocabulary {tok.get_vocab_size()}")
    torch.manual_seed(SEED)
    untrained = build()
    untrained_ppl = _perplexity(untrained, s["test"])
    cfg = FineTuneConfig(epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, weight_decay=WEIGHT_DECAY, seed=SEED)
    model = fine_tune(untrained, s["train"].x, s["train"].y, cfg,
                      progress=(lambda f, msg: log(msg)) if verbose else None)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        test_out = I.predict(model, s["test"].x)
    meta = {
        "model": NAME,
        "architecture": listing()["architecture_detail"],
        "dataset": "chatterbot-corpus 1.3.3 English, all 21 topics, dialogs de-duplicated",
        "params": sum(p.numel() for p in model.parameters()),
        "seed": SEED, "epochs": EPOCHS, "lr": LR, "batch_size": BATCH_SIZE, "weight_decay": WEIGHT_DECAY,
        "dropout": model.config.resid_pdrop,
        "seq_len": SEQ_LEN, "vocab": tok.get_vocab_size(),
        "threads": torch.get_num_threads(),
        "train_dialogs": len(t["train"]), "calib_dialogs": len(t["calib"]), "test_dialogs": len(t["test"]),
        "train_windows": len(s["train"]), "calib_windows": len(s["calib"]), "test_windows": len(s["test"]),
        "data_fingerprint": data_fingerprint(),
        "train_perplexity": round(_perplexity(model, s["train"]), 4),
        "calib_perplexity": round(_perplexity(model, s["calib"]), 4),
        "test_perplexity": round(perplexity_of(test_out, s["test"].y), 4),
        "test_next_token_accuracy": round(top1(test_out, s["test"].y), 4),
        "untrained_test_perplexity": round(untrained_ppl, 4),
        "train_seconds": round(seconds, 1),
    }
    if write:
        atomic_write_bytes(TOKENIZER_PATH, (tok.to_str(pretty=True) + "\n").encode())
        atomic_write_bytes(WEIGHTS_PATH, state_dict_bytes(model.state_dict()))
        stable = {k: v for k, v in meta.items() if k != "train_seconds"}  # retraining leaves git clean
        atomic_write_bytes(META_PATH, (json.dumps(stable, indent=2) + "\n").encode())
        tokenizer.cache_clear()
        splits.cache_clear()
    return meta


__all__ = ["NAME", "PERPLEXITY", "SEQ_LEN", "build", "encode", "generate", "listing", "load_model",
           "next_token_accuracy", "perplexity_of", "splits", "texts", "tokenizer", "train", "windows", "workload"]
