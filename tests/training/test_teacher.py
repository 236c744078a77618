"""The CNN teacher and the distillation term of the student's loss."""

import pytest
import torch
import torch.nn.functional as F

from model.factory import count_parameters
from training.config import AugmentConfig
from training.data import Split
from training.teacher import ConvTeacher, Distiller, TeacherConfig, load_teacher, teacher_logits, train_teacher


def test_teacher_is_a_small_cnn():
    teacher = ConvTeacher()
    assert 100_000 < count_parameters(teacher) < 160_000
    assert teacher(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_hard_distillation_mixes_the_labels_with_the_teachers_top_class():
    teacher = ConvTeacher().eval()
    x = torch.randn(8, 1, 28, 28)
    student = torch.randn(8, 10)
    labels_loss = torch.tensor(1.5)
    with torch.no_grad():
        top = teacher(x).argmax(1)
    got = Distiller(teacher, "hard", alpha=0.5).loss(x, student, labels_loss)
    assert torch.allclose(got, 0.5 * labels_loss + 0.5 * F.cross_entropy(student, top))


def test_token_distillation_is_hard_distillation_on_the_distillation_tokens_logits():
    teacher = ConvTeacher().eval()
    x = torch.randn(8, 1, 28, 28)
    distilled = torch.randn(8, 10)
    labels_loss = torch.tensor(0.7)
    hard = Distiller(teacher, "hard", alpha=0.4).loss(x, distilled, labels_loss)
    assert torch.allclose(Distiller(teacher, "token", alpha=0.4).loss(x, distilled, labels_loss), hard)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_token_distillation_teaches_the_class_head_the_labels_and_the_token_head_the_teacher(alpha):
    """One training step with all of the loss on one side: only that side's head learns."""
    from model import ViT, ViTConfig
    from training.engine import EpochOptions, train_one_epoch

    torch.manual_seed(0)
    model = ViT(ViTConfig(dim=16, depth=1, heads=2, distill_token=True))
    data = Split(torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.arange(8) % 10)
    options = EpochOptions(
        torch.device("cpu"),
        batch_size=8,
        augment=AugmentConfig.off(),
        label_smoothing=0.0,
        grad_clip=0.0,
        distiller=Distiller(ConvTeacher().eval(), "token", alpha=alpha),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_one_epoch(model, data, optimizer, lambda: None, torch.Generator().manual_seed(0), options)
    labels_head, teacher_head = model.head.weight.grad, model.head_dist.weight.grad
    learning = (labels_head.abs().sum() > 0, teacher_head.abs().sum() > 0)
    assert learning == ((True, False) if alpha == 0.0 else (False, True))


def test_soft_distillation_vanishes_when_the_student_answers_as_the_teacher():
    teacher = ConvTeacher().eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        same = teacher(x)
    distiller = Distiller(teacher, "soft", alpha=0.3, tau=2.0)
    assert torch.allclose(distiller.loss(x, same, torch.tensor(2.0)), torch.tensor(0.7 * 2.0), atol=1e-5)
    assert distiller.loss(x, -same, torch.tensor(2.0)) > 0.7 * 2.0  # disagreeing costs


@pytest.mark.slow
def test_teacher_trains_saves_and_loads_the_same_network(tmp_path):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[labels == 1, 4:24, 12:16] = 255  # ones: a bar; zeros: blank
    images = images + torch.randint(0, 30, (64, 28, 28), generator=generator, dtype=torch.uint8)
    data = Split(images, labels)
    path = tmp_path / "teacher.safetensors"
    model = train_teacher(data, data, TeacherConfig(epochs=6, batch_size=8), AugmentConfig.off(), path)
    logits = teacher_logits(model, data)
    assert float((logits.argmax(1) == labels).float().mean()) > 0.9  # it learns
    assert torch.allclose(teacher_logits(load_teacher(path), data), logits, atol=1e-5)
