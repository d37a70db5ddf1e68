"""`vmae-train`: pretrain, fine-tune, distil, evaluate, visualise and extract features, from WebDataset shards.

Training options are generated from the config dataclasses (vmae/cli/options.py), so each default lives in
vmae/training/config.py alone. Each command builds its config (a bad option stops here, before torch loads),
calls one library function and prints its report.
"""
import logging

import click

from vmae.cli.common import group, handle_errors
from vmae.cli.options import config_options, given
from vmae.training import presets
from vmae.training.config import (DistillConfig, EvalConfig, FeatureConfig, FinetuneConfig, PretrainConfig,
                                  eval_config, finetune_config, pretrain_config)


@group
def train(debug):
    """vmae-train: train VideoMAE V2 straight from WebDataset shards.

    \b
    Typical flow:
      vmae-train pretrain --shards shards/uh --preset vit-b-hybrid --output-dir runs/pretrain
      vmae-train finetune --preset k710-post-pretrain --init runs/pretrain/checkpoint-00100000.pth \\
          --shards shards/k710-train --val-shards shards/k710-val --output-dir runs/finetune
      vmae-train eval --shards shards/k710-val --checkpoint runs/finetune/checkpoint-best.pth
    The whole route, step by step: README.md.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def config_command(name: str, cls, recipes=(), recipes_help: str = ""):
    """A vmae-train command whose options are the fields of the config class `cls`, plus --preset when there
    are named recipes; errors go through the one error path."""
    def decorate(fn):
        fn = config_options(cls)(handle_errors(fn))
        if recipes:
            fn = click.option("--preset", type=click.Choice(recipes), help=recipes_help)(fn)
        return train.command(name)(fn)
    return decorate


def echo_lines(*lines) -> None:
    """The end of a run, printed by rank 0 (every rank returns a report under torchrun); empty lines left out."""
    click.echo("\n".join(line for line in lines if line))


# ---------------------------------------------------------------- pretrain, visualize

@config_command("pretrain", PretrainConfig, sorted(presets.PRETRAIN),
                "The reference's recipe for that model size (model, epochs, warmup, lr, clip, checkpointing); "
                "options given here still win.")
def pretrain_cmd(preset, **options):
    """Pretrain VideoMAE V2 (dual masking) straight from WebDataset shards, on one process or under torchrun.

    \b
      vmae-train pretrain --shards shards/uh --preset vit-b-hybrid --output-dir runs/b
      torchrun --nproc_per_node 8 --no-python vmae-train pretrain --shards ... --output-dir runs/b

    \b
    Epochs: an epoch is one pass over the shard set's videos, as the reference's --epochs; each video gives
    --num-sample views (one decode), so the paper's epoch names are epochs x num_sample: "1200e" (ViT-g) is
    --epochs 300 --num-sample 4, "800e" (ViT-B) is --epochs 200 --num-sample 4.
    Learning rate: lr = base_lr x global batch / 256, where the global batch counts clips, views included:
    batch_size x num_sample x processes x accum_steps (the paper's Table 4; the reference's scripts counted
    videos, so their 6e-4 is our 1.5e-4 and their 1e-3 our 2.5e-4 at num_sample 4: same actual lr).
    The run prints the global batch and the actual lr at start-up; logs go to OUTPUT_DIR/log.jsonl and tb/.
    """
    cfg = pretrain_config(preset, **given(options))
    from vmae.training.pretrain import pretrain

    report = pretrain(cfg)
    if report["rank"] != 0:
        return
    echo_lines(f"pretrain: steps {report['start_step']} -> {report['steps']} of {report['total_steps']}, "
               f"global batch {report['global_batch']} clips, lr {report['lr']:.4g}, last loss "
               f"{report['loss'] if report['loss'] is None else round(report['loss'], 4)}, "
               f"skipped samples {report['skipped']}",
               f"checkpoint: {report['checkpoint']}")


@train.command("visualize")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="A pretrain checkpoint (vmae or official).")
@click.option("--shards", required=True, help="Shards to draw clips from: a shard folder or a brace pattern.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--num", default=4, show_default=True, help="Clips to show.")
@click.option("--model", help="Model name, for checkpoints without a vmae config (official ones).")
@click.option("--mask-ratio", type=float, help="Encoder mask ratio [default: the checkpoint's, else 0.9].")
@click.option("--seed", default=0, show_default=True, help="Which clips, crops and masks.")
@handle_errors
def visualize_cmd(checkpoint, shards, out, num, model, mask_ratio, seed):
    """Draw, for a few clips: the input frames, the encoder's visible patches, the reconstruction of the hidden
    patches (de-normalised with each patch's own mean and std) and the target, as one PNG grid.

    \b
      vmae-train visualize --checkpoint runs/b/checkpoint-00010000.pth --shards shards/uh/uh-000000.tar --out recon.png
    """
    from vmae.training.visualize import visualize

    path = visualize(checkpoint, shards, out, num=num, model_name=model, mask_ratio=mask_ratio, seed=seed)
    click.echo(f"wrote {path}")


# ---------------------------------------------------------------- finetune, distill, eval, extract-features

def run_finetuning(cls, preset, options: dict) -> None:
    """finetune or distill (by the config class): the config, the preset's source, the run, its end on rank 0."""
    cfg = finetune_config(preset, cls=cls, **given(options))
    if preset:
        click.echo(f"preset {presets.resolve(preset, cfg.model)[1]}")
    from vmae.training import distill, finetune  # torch loads only once the options are known to be good

    report = distill.distill(cfg) if isinstance(cfg, DistillConfig) else finetune.finetune(cfg)
    if report["rank"] != 0:
        return
    val = report["val"]
    scores = (f"last val top-1 {val['top1']:.2f} top-5 {val['top5']:.2f}, best top-1 {report['best_top1']:.2f}"
              if val else "no validation (no --val-shards)")
    echo_lines(f"steps {report['steps']} of {report['total_steps']}, global batch "
               f"{report['global_batch_videos']} videos, lr {report['lr']:.4g}; {scores}",
               f"last checkpoint: {report['last_checkpoint']}",
               report["best_checkpoint"] and f"best checkpoint: {report['best_checkpoint']}")


@config_command("finetune", FinetuneConfig, presets.FINETUNE_PRESETS,
                "A recipe for the --model size (lr, layer decay, drop path, weight decay, epochs, batch, classes, "
                "sampling, flip), its source printed at start-up: the official scripts (k710-post-pretrain, k400, "
                "k600, ssv2, ucf101, hmdb51), the paper's Table 3 (ViT-g: k400-paper, k600-paper, and the "
                "64-frame 266-px k400-64x266, k600-64x266). A size without a recipe is refused. Options given "
                "here still win.")
def finetune_cmd(preset, **options):
    """Fine-tune a pretrained VideoMAE V2 encoder on labeled shards (one process or torchrun).

    \b
      vmae-train finetune --preset k710-post-pretrain --model vit_giant_patch14_224 \\
        --shards shards/k710-train --val-shards shards/k710-val --init vit_g_hybrid_pt_1200e.pth \\
        --output-dir runs/g-k710
      torchrun --nproc_per_node 8 --no-python vmae-train finetune --preset ssv2 ...

    \b
    Head: mean-pooled tokens -> fc_norm -> linear head (init scale 0.001). AdamW with layer-wise lr decay
    (patch_embed layer 0, block n layer n+1, head last), per-step warmup from 0 then cosine. Each decoded video
    gives --num-sample clips (RandAugment identical on every frame, random resized crop, flip); on the device:
    ImageNet normalisation, cube random erasing, Mixup/CutMix over whole clips with label smoothing folded in.
    Learning rate: lr = base_lr x batch_size x processes x accum_steps / 256, counting videos, not the
    repeated views, as the reference's fine-tuning and the paper's tables (so presets carry their numbers).
    After every epoch: single-view validation (top-1/top-5), an epoch checkpoint, and checkpoint-best.pth when
    top-1 improves (weights under `model` with official key names).
    """
    run_finetuning(FinetuneConfig, preset, options)


@config_command("distill", DistillConfig, presets.DISTILL_PRESETS,
                "The paper's Table 10 for K710 (the defaults) or SSV2 (lr 5e-4, sparse, no flip, 174 classes).")
def distill_cmd(preset, **options):
    """Distil a fine-tuned teacher into a smaller student by matching logits (KL at temperature 3).

    The student starts from a post-pretrained checkpoint; the loss is KL(softmax(teacher/T) ||
    softmax(student/T)) x T^2.

    \b
      vmae-train distill --teacher vit_g_k710_ft.pth --teacher-model vit_giant_patch14_224 \\
        --model vit_base_patch16_224 --init vit_b_k710_post_pretrain.pth \\
        --shards shards/k710-train --val-shards shards/k710-val --output-dir runs/b-distill

    \b
    Defaults are Table 10 (AdamW lr 1e-3 per 256 videos, wd 0.05, cosine, warmup 5, 100 epochs, RandAugment,
    mixup 0.8, cutmix 1.0, drop path 0.1, layer decay 0.75, clip 1.0). The teacher runs in eval mode under
    no_grad on exactly the clips the student sees (after erasing and mixup). Everything else, validation and
    checkpoints included, is as `vmae-train finetune`.
    """
    run_finetuning(DistillConfig, preset, options)


@config_command("eval", EvalConfig, presets.FINETUNE_PRESETS,
                "Views, sampling and classes of a task: 5x3 dense for Kinetics/UCF/HMDB, 2x3 sparse for SSV2.")
def eval_cmd(preset, **options):
    """Multi-view testing: each video decoded once, all its views cut from that decode, softmax probabilities
    averaged over views. Prints top-1, top-5 and mean per-class accuracy.

    \b
      vmae-train eval --shards 'k400/val-{000000..000019}.tar' --checkpoint runs/g-k400/checkpoint-best.pth
      vmae-train eval --shards 'ssv2/val-{000000..000024}.tar' --checkpoint ssv2_ft.pth --preset ssv2
      vmae-train eval --shards 'k400/val-{000000..000019}.tar' --checkpoint vit_g_k710_ft.pth --label-map k710-to-k400
      torchrun --nproc_per_node 8 --no-python vmae-train eval ...

    \b
    Views: 5x3 = 5 windows of 16 frames at the stride, spread evenly over the video, x 3 crops along the longer
    side (as the reference); 2x3 with --sparse = 2 interleaved TSN samplings x 3 crops. Scores are identical on
    one process and under torchrun: results are gathered by video key, de-duplicated and sorted.
    """
    cfg = eval_config(preset, **given(options))
    from vmae.training.evaluate import evaluate

    report = evaluate(cfg)
    if report["rank"] != 0:
        return
    repeated = report["repeated_keys"]
    echo_lines(f"model: {report['model']}",
               f"{report['videos']} videos ({report['skipped']} undecodable, skipped), {report['views']} "
               f"{report['sampling']} views: top-1 {report['top1']:.2f}  top-5 {report['top5']:.2f}  "
               f"mean class accuracy {report['mean_class_accuracy']:.2f}",
               repeated and f"warning: {len(repeated)} keys occur in more than one shard, scored once: "
                            f"{', '.join(repeated[:5])}",
               f"predictions: {report['predictions']}",
               report["confusion"] and f"confusion matrix: {report['confusion']}")


@config_command("extract-features", FeatureConfig)
def extract_features_cmd(**options):
    """Features of consecutive windows of every video, for temporal action detection (ActionFormer style).

    \b
      vmae-train extract-features --checkpoint vit_g_k710_ft.pth --videos thumos14/videos --out thumos14/features

    \b
    Window i covers frames i*window_stride + j*frame_stride, j < num_frames; windows running past the last
    frame are dropped and a video shorter than one window gives one window padded with its last frame, so
    n frames give max(1, (n - (num_frames-1)*frame_stride - 1) // window_stride + 1) windows. Each window is
    the whole frame resized to a square and ImageNet-normalised (the reference's TAD script skips the
    normalisation), and its feature is the model's pooled encoder output: OUT/KEY.npy is [windows, width]
    float32. index.parquet lists every input with frames, fps, windows and status (ok / exists / failed +
    error). A rerun keeps existing files; under torchrun each rank takes every N-th video. Frames, size and
    tubelet are the checkpoint's unless given, as in eval; the run says which were used.
    """
    cfg = FeatureConfig(**given(options))
    from vmae.training.features import extract_features

    report = extract_features(cfg)
    if report["rank"] != 0:
        return
    echo_lines(f"model: {report['model']}",
               f"{report['videos']} videos: {report['ok']} extracted, {report['existing']} already there, "
               f"{report['failed']} failed (see index.parquet); {report['windows']} windows of "
               f"{report['feature_dim']} features ({report['window']}) in {report['out']}")
