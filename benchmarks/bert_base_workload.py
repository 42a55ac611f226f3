"""A 12-layer BERT-base-shaped encoder (~110 M parameters) with random weights, as a workload file for the live
benchmark's cost-growth figure and the dashboard (``--workload benchmarks/bert_base_workload.py:workload``).

The encoder is ``transformers.BertModel(BertConfig())`` (hidden 768, 12 layers x 12 heads, FFN 3072, vocabulary
30,522: BERT-base's shape) initialised with seed 0, under minilm-topics' pooling and a Linear head; nothing is
downloaded. Its inputs are minilm-topics' tokenized chat lines (the same uncased BERT vocabulary; 318 test lines of
32 tokens, the preview its first 60). With random weights there are no true labels to learn, so the metric is
``agreement``: top-1 agreement with the uncompressed model's own predictions (1.0 for the baseline).
"""

from __future__ import annotations

from functools import lru_cache

import torch

import sample_models  # noqa: F401  (registers minilm-topics, whose tokenized data this reuses)
from compression_core.workload import Workload, resolve_workload
from sample_models.hf import transformers_names
from sample_models.minilm_topics import MiniLMTopics

NAME = "bert-base-random"


@lru_cache(maxsize=1)
def workload() -> Workload:
    """The BERT-base-shaped workload (built once per process; ~2 s and 440 MB)."""
    BertConfig, BertModel = transformers_names("BertConfig", "BertModel")
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(), add_pooling_layer=False).eval()
    model = MiniLMTopics(encoder, hidden=encoder.config.hidden_size).eval()
    data = resolve_workload("minilm-topics")
    return Workload(name=NAME, model=model, test=(data.test.x, data.test.y), calib=data.calib,
                    metric="agreement", description="BERT-base shape (12 x 768), random weights, agreement metric",
                    info={"preview_items": 60, "architecture": "BERT-base encoder (random) + Linear head"})
