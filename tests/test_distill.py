"""Knowledge distillation (Hinton et al. 2015): the loss is the paper's, inputs are untouched, teachers checked."""

import math

import pytest
import torch
import torch.nn.functional as F

import sample_models
from compression_core.distill import DistillConfig, distill, distillation_loss
from compression_core.errors import CompressionError
from compression_core.recipe import apply_recipe, load_recipe


def test_loss_is_hintons_soft_targets_with_t_squared_scaling():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    T, alpha = 3.0, 0.7
    p_t = F.softmax(t / T, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert math.isclose(float(distillation_loss(s, t, y, T, alpha)), float(expected), rel_tol=1e-5)
    assert math.isclose(float(distillation_loss(s, t, y, T, 0.0)), float(F.cross_entropy(s, y)), rel_tol=1e-6)
    assert float(distillation_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_cnn_teaches_mlp_without_touching_either():
    student = sample_models.load("digits-mlp")
    teacher = sample_models.load("digits-cnn")
    s0 = {k: v.clone() for k, v in student.model.state_dict().items()}
    t0 = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    out = distill(student.model, teacher.model, student, DistillConfig(teacher="digits-cnn", epochs=2),
                  teacher_input_shape=teacher.input_shape)
    assert all(torch.equal(s0[k], v) for k, v in student.model.state_dict().items())
    assert all(torch.equal(t0[k], v) for k, v in teacher.model.state_dict().items())
    assert not all(torch.equal(s0[k], v) for k, v in out.state_dict().items())
    with torch.no_grad():
        acc = (out(student.test.x).argmax(1) == student.test.y).float().mean()
    assert acc > 0.93


def test_teacher_on_another_dataset_is_refused_in_one_line():
    recipe = "version: 1\nmodel: digits-mlp\nsteps:\n  - kind: distill\n    teacher: mnist-cnn\n"
    with pytest.raises(CompressionError) as e:
        apply_recipe(load_recipe(recipe), with_latency=False)
    assert "\n" not in str(e.value) and "teacher" in str(e.value)


def test_fresh_student_learns_from_teacher_in_a_recipe():
    recipe = ("version: 1\nmodel: digits-mlp\nseed: 1\nsteps:\n  - kind: reinit\n  - kind: distill\n"
              "    teacher: digits-cnn\n    epochs: 10\n    lr: 0.003\n")
    r = apply_recipe(load_recipe(recipe), with_latency=False)
    assert r.after.accuracy > 0.9
