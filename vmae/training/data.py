"""The shard stream: WebDataset shards in, batches of uint8 clips out.

Stages (each worker): the samples it reads -> shuffle buffer -> decode + sample frames + crop (one decode per
video, `num_sample` views) -> batches (each view written once, straight into its row of the batch in the
model's layout; in a worker, a shared buffer reused once the main process is done with it: vmae.training.handoff).
Normalisation to float happens on the device (`transforms.normalize`), masks are drawn there.

Which samples a worker reads (the reading stages are in vmae.training.sources):
- exact (training default): epoch by epoch, a plan (vmae.training.epochs) deals every sample of the shard
  set once over ranks x workers, in ranges of shards read from the byte offsets in the set's index.parquet;
  every rank gets the same number of whole batches (padding repeats a few samples). Call
  `loader.dataset.set_epoch(epoch, spent)` before each epoch; a batch's `pos` are its videos' epoch positions,
  which a checkpoint records so that a resumed epoch deals only the positions not yet spent.
- resampled (`resampled=True`): whole shards drawn with replacement, endless (webdataset's classic way).
- val/test: one pass, shards dealt to ranks round-robin, then to workers: every video once over all ranks.
A sample that fails to decode is logged (key and shard) and counted in the next batch's `skipped`; in an exact
stream its slot takes a repeat of the worker's previous video, so every rank keeps its number of batches.
"""
import logging
import math
import random
from dataclasses import dataclass, fields
from functools import partial

import numpy as np
import torch
import webdataset as wds

from vmae.shards.format import decode_sample
from vmae.shards.index import MissingIndexError, shard_ends
from vmae.training import sampling, transforms
from vmae.config import raise_problems
from vmae.training.config import common_problems
from vmae.training.decode import DEFAULT_DECODER, DecodeError, get_decoder
from vmae.training.epochs import EpochPlan, epoch_slots, plan_epoch
from vmae.training.handoff import SLOT_KEY, BufferPool, Loader
from vmae.training.sources import (Failed, local_path, rank_shards, read_ranges, read_shards, shard_sets, shard_urls,
                                   take, worker_shards)

log = logging.getLogger(__name__)

MODES = ("pretrain", "train", "val", "test")
DEFAULT_STRIDE = 4
RANDAUG = "rand-m7-n4-mstd0.5-inc1"
# A stream where this many samples in a row fail is broken, not unlucky: stop with an error.
MAX_CONSECUTIVE_FAILURES = 100
BUFFERS_PER_WORKER = 5


@dataclass(frozen=True)
class StreamConfig:
    """What the stream reads and how it turns each video into clips; the run configs fill it (`from_run`)."""
    # What is read: one string, brace patterns allowed, several shard sets joined with '::'; their
    # index.parquet files (one URL per set; None: the one beside the shards).
    shards: str
    index: str | None = None
    # pretrain (multi-scale crop, no flip), train (fine-tuning: RandAugment, random resized crop, flip),
    # val (one centre view), test (test_segments x test_crops views from one decode).
    mode: str = "pretrain"
    # Exact epochs, or (resampled, pretrain/train) whole shards drawn with replacement, endless; each worker
    # shuffles through a buffer of this many samples (memory: as many compressed clips).
    resampled: bool = False
    seed: int = 0
    workers: int = 4
    shuffle_buffer: int = 100
    decoder: str = DEFAULT_DECODER
    # A batch: batch_size videos per process, each giving num_sample views from one decode (pretrain/train),
    # accum_steps batches per optimiser step (an exact epoch gives every rank a whole number of steps).
    batch_size: int = 8
    num_sample: int = 1
    accum_steps: int = 1
    # A view: frames at the stride (None: each sample's KEY.json `stride`, 4 if absent) or, sparse, SSV2-style
    # segments; val/test resize the shorter side to short_side (None: input_size) before cropping.
    num_frames: int = 16
    input_size: int = 224
    stride: int | None = None
    sparse: bool = False
    short_side: int | None = None
    test_segments: int = 5
    test_crops: int = 3
    # Augmentation (train). antialias: antialiased train/val/test resizes; off = the reference's (bilinear
    # without antialiasing, as OpenCV's INTER_LINEAR and F.interpolate), so published accuracies reproduce.
    # Pretraining's multi-scale crop always antialiases, as the reference's PIL resize.
    flip: bool = True
    randaug: str | None = RANDAUG
    antialias: bool = False

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} must be one of {', '.join(MODES)}")
        if not self.shards:
            problems.append("shards is empty: give a shard pattern such as 'DIR/name-{000000..000009}.tar'")
        problems += common_problems(self, ("num_frames", "input_size", "batch_size", "num_sample", "test_segments",
                                           "test_crops", "accum_steps"), ("stride",))
        if self.shuffle_buffer < 0:
            problems.append(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.decoder not in ("pyav", "decord"):
            problems.append(f"decoder {self.decoder!r} must be 'pyav' or 'decord'")
        if self.short_side is not None and self.short_side < self.input_size:
            problems.append(f"short_side {self.short_side} is smaller than the crop input_size {self.input_size}")
        if self.resampled and self.mode in ("val", "test"):
            problems.append(f"{self.mode} mode reads every video once: resampled must be False")
        raise_problems(self, problems)

    @classmethod
    def from_run(cls, run, **settings) -> "StreamConfig":
        """The stream a run (or eval) config reads: every field of ours that `run` has and sets (None there
        means the stream's default), then `settings` (mode, seed, ...)."""
        shared = {f.name: getattr(run, f.name) for f in fields(cls)
                  if getattr(run, f.name, None) is not None}
        return cls(**{**shared, **settings})

    @property
    def exact(self) -> bool:
        """Exact epochs: training modes unless resampled."""
        return self.mode in ("pretrain", "train") and not self.resampled

    @property
    def views(self) -> int:
        """Clips per video in a batch: num_sample (pretrain/train), 1 (val), segments x crops (test)."""
        return {"pretrain": self.num_sample, "train": self.num_sample, "val": 1,
                "test": self.test_segments * self.test_crops}[self.mode]


def steps_per_epoch(cfg: StreamConfig, sizes: list[int] | None, rank: int, world_size: int) -> int | None:
    """Batches per process per epoch, for shards of `sizes` samples (None: unknown). Exact: the epoch padded to
    whole steps of every rank. Resampled: samples / (batch_size x world_size). Val/test: the exact number of
    batches this rank yields (every worker ends with a partial batch)."""
    if sizes is None:
        return None
    if cfg.exact:
        return epoch_slots(sum(sizes), world_size, cfg.batch_size, cfg.accum_steps) // (cfg.batch_size * world_size)
    if cfg.mode in ("pretrain", "train"):
        return sum(sizes) // (cfg.batch_size * world_size)
    urls = shard_urls(cfg.shards)
    size = dict(zip(urls, sizes))
    workers = max(cfg.workers, 1)
    mine = rank_shards(urls, rank, world_size)
    return sum(math.ceil(sum(size[u] for u in worker_shards(mine, w, workers)) / cfg.batch_size)
               for w in range(workers))


# --- per-video work: decode once, cut the views ----------------------------------------------------------

def clip_views(cfg: StreamConfig, reader, stride: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """All views of one video, each uint8 [T, 3, S, S] (channels-last, possibly a view of a larger clip; the batch
    writer transposes): num_sample crops of one decode (pretrain/train), one centre crop (val), or segments x
    crops cut from one decode of the union of their frames (test, segment-major)."""
    n, size = reader.num_frames, cfg.input_size
    if cfg.mode == "pretrain":
        clip = transforms.as_clip(reader.get_frames(sampling.pretrain_indices(n, cfg.num_frames, stride, rng)))
        views = [transforms.multiscale_crop(clip, rng, size) for _ in range(cfg.num_sample)]
    elif cfg.mode == "train":
        ids = (sampling.sparse_train_indices(n, cfg.num_frames, rng) if cfg.sparse
               else sampling.dense_train_indices(n, cfg.num_frames, stride, rng))
        # RandAugment sees the decoded resolution, as the reference (its cost grows with the pixel count:
        # benchmarks/README.md, RandAugment).
        clip = transforms.as_clip(reader.get_frames(ids))
        views = [_train_view(cfg, clip, rng) for _ in range(cfg.num_sample)]
    elif cfg.mode == "val":
        ids = (sampling.sparse_val_indices(n, cfg.num_frames) if cfg.sparse
               else sampling.dense_val_indices(n, cfg.num_frames, stride))
        clip = transforms.resize_short_side(transforms.as_clip(reader.get_frames(ids)), cfg.short_side or size,
                                            cfg.antialias)
        views = [transforms.centre_crop(clip, size)]
    else:
        views = test_views(cfg, reader, stride)
    return views


def _train_view(cfg: StreamConfig, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if cfg.randaug:
        clip = transforms.randaugment_clip(clip, cfg.randaug, rng, cfg.input_size)
    clip = transforms.random_resized_crop(clip, rng, cfg.input_size, antialias=cfg.antialias)
    if cfg.flip and rng.random() < 0.5:
        clip = transforms.hflip(clip)
    return clip


def test_view_indices(cfg: StreamConfig, n: int, stride: int) -> list[np.ndarray]:
    if cfg.sparse:
        return sampling.sparse_test_views(n, cfg.num_frames, cfg.test_segments)
    return sampling.dense_test_views(n, cfg.num_frames, stride, cfg.test_segments)


def test_views(cfg: StreamConfig, reader, stride: int) -> list[torch.Tensor]:
    """segments x crops views [T, 3, S, S] (segment-major), from one decode of the union of their frames,
    resized once."""
    segments = test_view_indices(cfg, reader.num_frames, stride)
    union = np.unique(np.concatenate(segments))
    clip = transforms.resize_short_side(transforms.as_clip(reader.get_frames(union)),
                                        cfg.short_side or cfg.input_size, cfg.antialias)
    views = []
    for ids in segments:
        part = clip[torch.from_numpy(np.searchsorted(union, ids))]
        views += transforms.spatial_crops(part, cfg.input_size, cfg.test_crops)
    return views


# --- the stream ---------------------------------------------------------------------------------------------

def _open(sample: dict):
    """(video bytes, metadata, label) of a raw tar sample; malformed members count as decode errors."""
    try:
        _, video, meta, label = decode_sample(sample)
    except (KeyError, ValueError, TypeError) as err:
        raise DecodeError(f"malformed sample ({type(err).__name__}: {err})") from err
    return video, meta, label


def _clips(samples, cfg: StreamConfig, seed_words: tuple):
    """Decode and cut each sample into a dict (views, key, source, label, pos). A sample that fails is logged
    and comes out as Failed, so the batching stage can count it."""
    decoder = get_decoder(cfg.decoder)
    labeled = cfg.mode != "pretrain"
    failures = 0
    for number, sample in enumerate(samples):
        if isinstance(sample, Failed):
            yield sample
            continue
        key, url, pos = sample.get("__key__"), sample.get("__url__"), sample.get("__pos__", -1)
        # One generator per sample, so that its augmentation does not depend on how many samples before it
        # failed: exact streams seed it from (seed, epoch, position, repeat), so a resumed epoch augments
        # each sample as an uninterrupted one would; others from (seed, rank, worker, pass, sample number).
        words = (*seed_words, pos, int(sample["__repeat__"])) if pos >= 0 else (*seed_words, number)
        rng = np.random.default_rng(words)
        try:
            video, meta, label = _open(sample)
            if labeled and label is None:
                raise ValueError(f"sample {key} in {url} has no .cls label: {cfg.mode} mode needs labeled shards "
                                 "(vmae-data shard with labels, e.g. k710)")
            stride = cfg.stride or meta.get("stride") or DEFAULT_STRIDE
            with decoder.open(video) as reader:
                views = clip_views(cfg, reader, int(stride), rng)
        except DecodeError as err:
            failures += 1
            log.warning("skipping sample %s from %s: %s", key, url, err)
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise RuntimeError(f"{failures} samples in a row failed to decode (last: {key} in {url}); "
                                   "check the shards with `vmae-data verify --decode`") from err
            yield Failed(pos)
            continue
        failures = 0
        yield {"views": views, "key": key, "source": meta.get("source") or "", "label": label, "pos": pos}


def _batches(items, cfg: StreamConfig, pool: BufferPool):
    """Batches of batch_size videos, each carrying the failures counted since the previous batch.

    Exact streams give the slot of a failed sample (keeping its position, so that it counts as spent) to a
    repeat of the previous good video, so every worker yields exactly its share of whole batches. One-pass
    val/test streams end with their partial batch, possibly empty, so no failure goes uncounted; resampled
    streams drop a final partial batch (its failures were logged)."""
    batch, skipped, last, owed = _Batch(cfg, pool), 0, None, []
    for item in items:
        if isinstance(item, Failed):
            skipped += 1
            if not cfg.exact:
                continue
            if last is None:  # nothing to repeat yet: the first good video fills these slots too
                owed.append(item.pos)
                continue
            item = {**last, "pos": item.pos}
        else:
            last = item
        for one in [item] + [{**item, "pos": pos} for pos in owed]:
            batch.add(one)
            if len(batch) == cfg.batch_size:
                yield batch.finish(skipped)
                batch, skipped = _Batch(cfg, pool), 0
        owed = []
    if owed:
        raise RuntimeError(f"none of the {len(owed)} samples this worker read could be decoded (see the messages "
                           "above); check the shards with `vmae-data verify --decode`")
    if cfg.mode in ("val", "test") and (len(batch) or skipped):
        yield batch.finish(skipped)


def _video_buffer(shape: tuple, pool: BufferPool) -> tuple:
    """An uninitialised uint8 batch buffer and its (worker, slot) in `pool` (None: untracked). In this process a
    plain tensor; in a DataLoader worker a shared-memory buffer that the worker reuses once the main process is
    done with it (vmae.training.handoff), so a batch crosses over without a copy or freshly faulted pages."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return torch.empty(shape, dtype=torch.uint8), None
    buffer, slot = pool.take(info.id, shape)
    return buffer, None if slot is None else (info.id, slot)


class _Batch:
    """One batch being filled: each video's views are written into their rows as the video arrives (the
    layout transpose and the batch copy in one pass, while the views are still in cache), then dropped.

    In a worker the buffer comes from the stream's BufferPool and is reused once the main process no longer
    refers to it. Views of one video stay adjacent: pretrain/train `video` [B*views, 3, T, S, S] with
    key/source/label repeated per view; val [B, 3, T, S, S]; test [B, V, 3, T, S, S].
    """

    def __init__(self, cfg: StreamConfig, pool: BufferPool):
        self.cfg, self.pool = cfg, pool
        self.shape = (3, cfg.num_frames, cfg.input_size, cfg.input_size)
        self.video = self.slot = None  # allocated with the first video, so an empty final batch costs nothing
        self.keys, self.sources, self.labels, self.pos = [], [], [], []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, item: dict):
        views = self.cfg.views
        if len(item["views"]) != views:
            raise ValueError(f"sample {item['key']} gave {len(item['views'])} views, the batch expects {views}")
        if self.video is None:
            self.video, self.slot = _video_buffer((self.cfg.batch_size * views, *self.shape), self.pool)
        row = len(self) * views
        for i, view in enumerate(item["views"]):
            transforms.write_cthw(view, self.video[row + i])
        self.keys.append(item["key"])
        self.sources.append(item["source"])
        self.labels.append(item["label"])
        self.pos.append(item["pos"])

    def finish(self, skipped: int = 0) -> dict:
        cfg, n = self.cfg, len(self)
        repeat = cfg.views if cfg.mode in ("pretrain", "train") else 1
        if self.video is None:
            video = torch.empty((0, *self.shape), dtype=torch.uint8)
        else:
            video = self.video[:n * cfg.views]
        if cfg.mode == "test":
            video = video.view(n, cfg.views, *self.shape)
        batch = {"video": video,
                 "key": [k for k in self.keys for _ in range(repeat)],
                 "source": [s for s in self.sources for _ in range(repeat)],
                 "pos": torch.tensor([p for p in self.pos for _ in range(repeat)], dtype=torch.int64),
                 "skipped": skipped}
        if cfg.mode != "pretrain":
            batch["label"] = torch.tensor([x for x in self.labels for _ in range(repeat)], dtype=torch.int64)
        if self.slot is not None:
            batch[SLOT_KEY] = self.slot  # taken off by handoff.Loader in the main process
        return batch


class ClipStream(torch.utils.data.IterableDataset):
    """The per-worker pipeline; which samples it reads depends on (rank, world_size, worker) and, in an exact
    stream, on the epoch set by `set_epoch`."""

    def __init__(self, cfg: StreamConfig, rank: int, world_size: int):
        super().__init__()
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.urls = shard_urls(cfg.shards)
        self.workers = max(cfg.workers, 1)
        try:
            self.ends = shard_ends(shard_sets(cfg.shards), cfg.index)
        except MissingIndexError:
            if cfg.exact:
                raise
            self.ends = None  # resampled and one-pass streams read whole shards; only their length is unknown
        self.sizes = None if self.ends is None else [len(e) for e in self.ends]
        self.samples = None if self.sizes is None else sum(self.sizes)
        self.plan = None
        self.passes = 0
        # A worker's batches in use in the usual loop: 2 in flight (the DataLoader's prefetch_factor, the one
        # being written among them), the caller's, and the one before it (released at the next draw); one spare.
        # Beyond that a worker takes fresh buffers; slots get their buffer on first use.
        self.pool = BufferPool(cfg.workers, BUFFERS_PER_WORKER)

    def set_epoch(self, epoch: int, spent: np.ndarray | None = None) -> EpochPlan:
        """Plan exact epoch `epoch` for the next pass; `spent` (bool per epoch position) marks positions already
        trained on, which the pass leaves out (a resumed epoch)."""
        cfg = self.cfg
        self.plan = plan_epoch(self.sizes, cfg.seed, epoch, self.world_size, self.workers, cfg.batch_size,
                               cfg.accum_steps, spent)
        if self.rank == 0:
            resumed = f", resumed with {self.plan.spent} already spent" if self.plan.spent else ""
            log.info("epoch %d: %d samples%s, %d padding (repeats) -> %d batches of %d per rank on %d rank(s)",
                     epoch, self.plan.samples, resumed, self.plan.padding, self.plan.batches, cfg.batch_size,
                     self.world_size)
        return self.plan

    def __iter__(self):
        cfg = self.cfg
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if cfg.exact:
            plan = self.plan or self.set_epoch(0)
            seed_words = (cfg.seed, plan.epoch)
            stages = [partial(read_ranges, plan.ranges(self.rank, worker), self.urls, self.ends)]
        elif cfg.resampled:
            # A fresh seed per pass over the stream, so each pass of a persistent worker differs.
            seed_words = (cfg.seed, self.rank, worker, self.passes)
            stages = [wds.ResampledShards(self.urls, seed=cfg.seed, deterministic=True,
                                          worker_seed=partial(_seed_of, seed_words)), read_shards]
        else:
            seed_words = (cfg.seed, self.rank, worker, self.passes)
            stages = [wds.SimpleShardList(self.urls), partial(take, index=self.rank, count=self.world_size),
                      partial(take, index=worker, count=num_workers), read_shards]
        if cfg.mode in ("pretrain", "train") and cfg.shuffle_buffer > 1:
            stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                                      rng=random.Random(_seed_of((*seed_words, self.rank, worker)))))
        stages += [partial(_clips, cfg=cfg, seed_words=seed_words), partial(_batches, cfg=cfg, pool=self.pool)]
        self.passes += 1
        return iter(wds.DataPipeline(*stages))


def _seed_of(words) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def _seed_worker(seed: int, rank: int, worker: int):
    # Global generators (torch, numpy, random) differ per rank and worker and follow cfg.seed.
    state = np.random.SeedSequence([seed, rank, worker]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[1]))


def make_loader(cfg: StreamConfig, rank: int = 0, world_size: int = 1):
    """(DataLoader over the stream for this rank, steps_per_epoch or None). Batches are dicts, see `_Batch`:
    `video` uint8, `key`, `source`, `label` (not in pretrain) int64, `pos` int64 (epoch positions in exact
    streams, else -1), `skipped` (samples this worker could not decode since its previous batch).
    Exact streams: call `loader.dataset.set_epoch(epoch)` before each epoch (epoch 0 by default)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    urls = shard_urls(cfg.shards)
    missing = [u for u in urls if local_path(u) is not None and not local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards of {cfg.shards!r} do not exist, e.g. "
                                f"{missing[0]}: check the pattern and its brace range")
    if cfg.mode == "train" and cfg.randaug:
        # Build RandAugment (and import timm) once here: forked workers inherit it instead of each paying it.
        transforms.randaugment_transform(cfg.randaug, cfg.input_size)
    stream = ClipStream(cfg, rank, world_size)
    # Exact streams start fresh workers each epoch, so that they see the epoch's plan.
    loader = Loader(
        stream, stream.pool, batch_size=None, num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0 and not cfg.exact, pin_memory=torch.cuda.is_available(),
        worker_init_fn=partial(_seed_worker, cfg.seed, rank) if cfg.workers > 0 else None)
    return loader, steps_per_epoch(cfg, stream.sizes, rank, world_size)
