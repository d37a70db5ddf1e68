"""Pretraining targets and loss (reference layout), and the distillation KL term."""
import torch
import torch.nn.functional as F

from vmae.training.masking import first_indices
from vmae.training.transforms import denormalize

TARGET_EPS = 1e-6  # added to the std, not the variance, as the reference does


def patchify(video: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, N, tubelet*p*p, C]: tokens in the PatchEmbed raster order, pixels inside a token
    ordered (time, row, column), channel kept apart."""
    B, C, T, H, W = video.shape
    t, h, w = T // tubelet_size, H // patch_size, W // patch_size
    x = video.reshape(B, C, t, tubelet_size, h, patch_size, w, patch_size)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, t, h, w, tubelet, p, p, C
    return x.reshape(B, t * h * w, tubelet_size * patch_size * patch_size, C)


def pretrain_targets(video_normalized: torch.Tensor, patch_size: int, tubelet_size: int,
                     normalize: bool = True) -> torch.Tensor:
    """Reconstruction targets [B, N, tubelet*p*p*3] (channel fastest) from an ImageNet-normalised clip
    [B, 3, T, H, W]: de-normalised to [0, 1], then, if `normalize`, each token's pixels of each channel
    normalised by their mean and unbiased std (+1e-6). Computed in fp32."""
    patches = patchify(denormalize(video_normalized.float()), patch_size, tubelet_size)  # [B, N, P, 3]
    if normalize:
        mu = patches.mean(dim=-2, keepdim=True)
        sigma = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        patches = (patches - mu) / (sigma + TARGET_EPS)
    return patches.flatten(2)


def pretrain_loss(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                  decode_mask: torch.Tensor | None, num_decoded: int | None = None) -> torch.Tensor:
    """Token-weighted MSE. pred [B, N_dec, P] follows the raster order of the decoded tokens (~decode_mask;
    decode_mask None = VideoMAE v1, decode the hidden tokens); targets [B, N, P]. Each token's squared error is
    averaged over its P values; only tokens hidden from the encoder count, and the sum is divided by their
    number (at least 1, so a batch with none gives 0 rather than NaN). num_decoded: N_dec when known
    (`masking.mask_counts`): the same tokens gathered by index, without a host sync."""
    B = pred.shape[0]
    decode_vis = mask if decode_mask is None else ~decode_mask
    if num_decoded is None:
        labels = targets[decode_vis].reshape(B, -1, targets.shape[-1])
        weight = mask[decode_vis].reshape(B, -1).float()  # encoder-hidden among the decoded tokens
    else:
        decoded = first_indices(decode_vis, num_decoded)
        labels = targets.gather(1, decoded.unsqueeze(-1).expand(-1, -1, targets.shape[-1]))
        weight = mask.gather(1, decoded).float()
    per_token = (pred.float() - labels.float()).pow(2).mean(dim=-1)
    return (per_token * weight).sum() / weight.sum().clamp_min(1)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, summed over classes and averaged over the batch.
    The T^2 keeps gradient magnitudes independent of T (Hinton et al.)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature * temperature
