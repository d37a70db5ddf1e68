"""Distillation: the loss sees the teacher frozen on the student's own clips, and a run lowers the KL."""
import pytest
import torch
from click.testing import CliRunner

from finetune_data import classifier_checkpoint, labeled_shards
from vmae.cli.train import train
from vmae.training.checkpoint import load_checkpoint_file, load_pretrained
from vmae.training.config import DistillConfig, finetune_config
from vmae.training.data import StreamConfig, make_loader
from vmae.training.distill import distill, distill_loss, load_teacher
from vmae.training.engine import Amp
from vmae.training.finetune import build_model
from vmae.training.losses import distill_kl
from vmae.training.models import create_model
from vmae.training.progress import record_path
from vmae.training.transforms import normalize


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Spy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        self.calls.append((x, torch.is_grad_enabled(), self.training))
        return self.inner(x)


def test_loss_runs_the_frozen_teacher_on_the_student_inputs(tmp_path):
    teacher = classifier_checkpoint(tmp_path / "t.pth", seed=7)
    cfg = DistillConfig(shards="s", output_dir="o", teacher=str(teacher), model="vit_test", num_classes=3,
                        num_frames=4, input_size=32, init="none")
    teacher, note = load_teacher(cfg, "cpu")
    assert "vit_test" in note and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    spy = Spy(teacher)
    spy.training = False
    loss_fn = distill_loss(spy, 3.0, Amp("off"))
    inputs = torch.randn(4, 3, 4, 32, 32)
    student_logits = torch.randn(4, 3, requires_grad=True)
    loss = loss_fn(student_logits, inputs, torch.zeros(4, 3))
    (seen, grad_enabled, training), = spy.calls
    assert seen is inputs and not grad_enabled and not training
    with torch.no_grad():
        expected = distill_kl(student_logits, teacher(inputs), 3.0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student_logits.grad is not None

    with pytest.raises(ValueError, match="predicts 3 classes but the student has --num-classes 710"):
        load_teacher(DistillConfig(shards="s", output_dir="o", teacher=cfg.teacher, model="vit_test",
                                   num_frames=4, input_size=32, init="none"), "cpu")
    assert cfg.init is None  # an explicit "none" is stored as what ran: no initial weights


@pytest.mark.slow
def test_distillation_lowers_the_kl(tmp_path, tmp_path_factory):
    train = labeled_shards(tmp_path_factory, "train", [12, 12], seed=1)
    val = labeled_shards(tmp_path_factory, "val", [4, 3, 2], seed=2)
    teacher_path = classifier_checkpoint(tmp_path / "teacher.pth", seed=7)
    post = create_model("vit_test", num_classes=710, num_frames=4, img_size=32)  # a K710 post-pretrained student
    torch.save({"model": post.state_dict()}, tmp_path / "student_init.pth")
    cfg = finetune_config("distill-k710", cls=DistillConfig, shards=train, val_shards=val,
                          output_dir=str(tmp_path / "run"), teacher=str(teacher_path), model="vit_test",
                          num_classes=3, init=str(tmp_path / "student_init.pth"), num_frames=4, input_size=32,
                          batch_size=4, epochs=4, warmup_epochs=1, base_lr=0.25, randaug="none", workers=0,
                          device="cpu", tensorboard=False, log_every=2, record_samples=True)
    assert (cfg.temperature, cfg.mixup, cfg.clip_grad, cfg.layer_decay) == (3.0, 0.8, 1.0, 0.75)

    loader, _ = make_loader(StreamConfig(shards=val, mode="val", num_frames=4, input_size=32, batch_size=9,
                                         workers=0))
    clips = normalize(next(iter(loader))["video"])
    teacher, _ = load_teacher(cfg, "cpu")

    def kl(student):
        with torch.no_grad():
            return float(distill_kl(student.eval()(clips), teacher(clips), cfg.temperature))

    student = build_model(cfg)
    report = load_pretrained(student, cfg.init)
    assert "dropped (710 classes; the model has 3)" in report.head
    before = kl(student)
    result = distill(cfg)
    assert "vit_test" in result["teacher"] and result["steps"] == 24
    for epoch in range(4):  # the student saw each of the 24 videos once per epoch
        keys = record_path(tmp_path / "run", epoch, 0).read_text().split()
        assert sorted(keys) == [f"train_{i:04d}" for i in range(24)], epoch
    student.load_state_dict(load_checkpoint_file(result["last_checkpoint"])["model"])
    after = kl(student)
    assert after < 0.5 * before, (before, after)


def test_distill_refuses_to_start_without_init(tmp_path):
    teacher = str(classifier_checkpoint(tmp_path / "t.pth", seed=7))
    args = ["distill", "--teacher", teacher, "--shards", "s.tar", "--output-dir", str(tmp_path / "o")]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 2 and "--init none" in result.output and not (tmp_path / "o").exists()
