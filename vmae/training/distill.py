"""Distillation (`vmae-train distill`): a student matches a fine-tuned teacher's logits.

The loss is KL(softmax(teacher/T) || softmax(student/T)) x T^2 (losses.distill_kl, T = 3.0 in the paper).
The teacher runs in eval mode under no_grad on exactly the clips the student sees, mixup and erasing
included. Everything else (stream, augmentation, layer decay, schedule, EMA, checkpoints, validation of the
student) is the fine-tuning loop.
"""
import logging

import torch

from vmae.errors import ConfigError
from vmae.training import finetune
from vmae.training.config import DistillConfig
from vmae.training.engine import Amp
from vmae.training.evaluate import load_classifier
from vmae.training.losses import distill_kl

log = logging.getLogger(__name__)


def load_teacher(cfg: DistillConfig, device):
    """The fine-tuned teacher, frozen, in eval mode on `device`; its head must match the student's classes."""
    teacher, classes, note = load_classifier(cfg.teacher_model, cfg.teacher, model_key=cfg.teacher_key,
                                             num_frames=cfg.num_frames, img_size=cfg.input_size,
                                             tubelet_size=cfg.tubelet_size)
    if classes != cfg.num_classes:
        raise ConfigError(f"--teacher {cfg.teacher} predicts {classes} classes but the student has "
                         f"--num-classes {cfg.num_classes}; they must match")
    teacher.requires_grad_(False)
    return teacher.to(device).eval(), note


def distill_loss(teacher, temperature: float, amp: Amp):
    """loss(student_logits, inputs, targets): the teacher (eval mode, no_grad) scores the very clips the student
    saw; the labels (mixed or not) are unused."""
    def loss_fn(student_logits, inputs, targets):
        with torch.no_grad(), amp.autocast():
            teacher_logits = teacher(inputs)
        return distill_kl(student_logits, teacher_logits, temperature)
    return loss_fn


def distill(cfg: DistillConfig) -> dict:
    """Distil `cfg.teacher` into `cfg.model` (initialised from `cfg.init`); returns the run report."""
    notes = []

    def make_loss(info):
        teacher, note = load_teacher(cfg, info.device)
        notes.append(note)
        if info.is_main:
            log.info("teacher: %s", note)
        return distill_loss(teacher, cfg.temperature, Amp(cfg.amp, info.device))

    return {**finetune.run(cfg, make_loss), "teacher": notes[0]}
