"""Knowledge distillation: train a student on a teacher's softened outputs as well as the true labels.

Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531): the loss is
``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``. The ``T^2`` factor keeps the soft
term's gradients the same size when the temperature changes (they scale as ``1 / T^2``).

The teacher may be another architecture with another input shape (digits-cnn (1, 8, 8) teaching digits-mlp (64,)):
both read the same data set in the same sample order, so the student's batch is reshaped to the teacher's input.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .technique import ProgressFn, StepConfig, StepContext, register, TechniqueUI
from .train import FineTuneConfig, fine_tune, per_position
from .workload import is_reference, workload_names, resolve_workload


class DistillConfig(StepConfig):
    """Train the model as a student of ``teacher`` (a workload reference reading the same data; default: the
    recipe's own uncompressed model, e.g. to recover a pruned or shrunk copy of it)."""

    kind: Literal["distill"] = "distill"
    ui = TechniqueUI(family="distill", label="distillation from a teacher", trains=True, order=20)
    teacher: str | None = Field(default=None, min_length=1, max_length=1000,
                                description="workload reference of the teacher (same data, e.g. digits-cnn for "
                                "digits-mlp); default: the recipe's own model before compression")
    temperature: float = Field(default=4.0, gt=0, le=100, description="softmax temperature T of the soft targets")
    alpha: float = Field(default=0.9, ge=0, le=1, description="weight of the soft (teacher) loss; 1 - alpha on labels")
    epochs: int = Field(default=10, ge=0, le=500)
    lr: float = Field(default=1e-3, gt=0, le=1.0)
    batch_size: int = Field(default=64, ge=1, le=4096)
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    seed: int = Field(default=0, ge=0)

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, v: str | None) -> str | None:
        if v is not None and not is_reference(v) and v not in workload_names():
            raise ValueError(f"unknown teacher {v!r}; choose one of {', '.join(workload_names())} "
                             "or give path/to/file.py:attr")
        return v


class ReinitConfig(StepConfig):
    """Re-initialise every layer's weights (``reset_parameters``) with a seed: a student trained from scratch,
    e.g. before ``distill``, keeping the sample model's architecture."""

    kind: Literal["reinit"] = "reinit"
    ui = TechniqueUI(family="train", label="re-initialise the weights (train from scratch)", hidden=True, order=90)
    seed: int = Field(default=0, ge=0)


@register(ReinitConfig)
def _reinit_step(model: nn.Module, cfg: ReinitConfig, ctx: StepContext) -> nn.Module:
    if ctx.replay:  # the weights are loaded afterwards; the structure is unchanged
        return model
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        for m in model.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton's loss: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, y)``."""
    t = float(temperature)
    student_logits, y = per_position(student_logits, y)  # sequence outputs: every position is an item
    teacher_logits = teacher_logits.reshape(student_logits.shape)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),  # (B, classes)
        F.log_softmax(teacher_logits / t, dim=1),  # (B, classes)
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, y)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data,
    cfg: DistillConfig,
    teacher_input_shape: tuple[int, ...] | None = None,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """Return a copy of ``student`` trained on ``data.train`` with ``teacher``'s soft targets; neither is modified.

    ``teacher_input_shape`` (per sample) reshapes the student's batch for a teacher of another input shape. The
    teacher runs in eval mode under ``no_grad`` on each batch (its BatchNorm statistics are not touched).
    """
    train = data.needs("train", "distillation") if hasattr(data, "needs") else data.train
    x = train.x
    dict_input = I.is_dict(x)
    shape = None
    if not dict_input:
        shape = tuple(teacher_input_shape) if teacher_input_shape is not None else tuple(x.shape[1:])
        per_sample = int(torch.tensor(x.shape[1:]).prod()) if x.dim() > 1 else 1
        if int(torch.tensor(shape).prod()) != per_sample:
            raise CompressionError(
                f"teacher: input shape {shape} does not fit the student's samples of shape {tuple(x.shape[1:])}"
            )
    was_training = teacher.training
    teacher.eval()

    def loss_fn(logits: torch.Tensor, xb, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tx = xb if shape is None else xb.reshape(len(xb), *shape)
            t_logits = I.call(teacher, tx).float()  # (B, classes)
        return distillation_loss(logits, t_logits, yb, cfg.temperature, cfg.alpha)

    ft = FineTuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                        seed=cfg.seed)
    try:
        return fine_tune(student, x, train.y, ft, progress=progress, loss_fn=loss_fn)
    finally:
        teacher.train(was_training)


def load_teacher(ref: str | None, student) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The teacher model and its per-sample input shape: the workload ``ref`` (refused in one line unless it reads
    the student's data: same number of samples, same input size), or the student's own uncompressed model."""
    if ref is None or ref == getattr(student, "name", None) or ref == getattr(student, "reference", None):
        return student.model, getattr(student, "input_shape", None)
    teacher = resolve_workload(ref)
    sx, tx = student.test.x, teacher.test.x
    same = I.n_items(sx) == I.n_items(tx)
    if same and not I.is_dict(sx) and not I.is_dict(tx):
        same = sx[0].numel() == tx[0].numel() and bool(torch.equal(sx.reshape(len(sx), -1), tx.reshape(len(tx), -1)))
    elif same:
        same = I.is_dict(sx) and I.is_dict(tx) and set(sx) == set(tx)
    if not same:
        raise CompressionError(f"teacher: {ref!r} does not read the same data as {student.name!r}; choose a teacher "
                               "trained on the same inputs (e.g. digits-cnn for digits-mlp)")
    return teacher.model, teacher.input_shape


@register(DistillConfig)
def _distill_step(model: nn.Module, cfg: DistillConfig, ctx: StepContext) -> nn.Module:
    teacher, shape = load_teacher(cfg.teacher, ctx.data)  # checked in replay too: a bad teacher fails validation
    if ctx.replay:  # training does not change the structure
        return model
    return distill(model, teacher, ctx.data, cfg, teacher_input_shape=shape, progress=ctx.report)


