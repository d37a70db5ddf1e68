"""The shard stream: WebDataset shards in, batches of uint8 clips out.

Stages (each worker): shard list (resampled, or split by rank then by worker) -> tar members -> samples ->
shuffle buffer -> decode + sample frames + crop (one decode per video, `num_sample` views) -> batches (each
view written once, straight into its row of the batch in the model's layout).
A sample that fails to decode is logged (key and shard) and counted in the next batch's `skipped`.
Normalisation to float happens on the device (`transforms.normalize`), masks are drawn there too.

Resampled streams (pretraining default) are endless: take `steps_per_epoch` batches per epoch. Other streams
make one pass: each rank reads each of its shards exactly once (shards are dealt to ranks round-robin, then to
workers), so evaluation sees every video once over all ranks.
"""
import json
import logging
import math
import random
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from vmae.shards.format import decode_sample
from vmae.shards.index import read_shards_json
from vmae.training import sampling, transforms
from vmae.training.config import common_problems, raise_problems
from vmae.training.decode import DEFAULT_DECODER, DecodeError, get_decoder

log = logging.getLogger(__name__)

MODES = ("pretrain", "train", "val", "test")
DEFAULT_STRIDE = 4
RANDAUG = "rand-m7-n4-mstd0.5-inc1"
# A stream where this many samples in a row fail is broken, not unlucky: stop with an error.
MAX_CONSECUTIVE_FAILURES = 100


@dataclass(frozen=True)
class StreamConfig:
    """What the stream reads and how it turns each video into clips.

    shards: one string, brace patterns allowed, several shard sets joined with '::'.
    mode: pretrain (multi-scale crop, no flip), train (fine-tuning: RandAugment, random resized crop, flip),
      val (one centre view), test (test_segments x test_crops views from one decode).
    batch_size: videos per process per batch (a batch holds batch_size * num_sample clips in pretrain/train).
    num_sample: repeated augmentation, views per decoded video (pretrain/train).
    resampled: draw shards with replacement, endless (None: True for pretrain, False otherwise).
    stride: frame stride for dense sampling (None: each sample's KEY.json `stride`, 4 if absent).
    sparse: SSV2-style segment sampling instead of dense strided windows (train/val/test).
    short_side: val/test resize of the shorter side before cropping (None: input_size).
    antialias: antialiased train/val/test resizes; off = the reference's (bilinear without antialiasing, as
      OpenCV's INTER_LINEAR and F.interpolate), so published accuracies reproduce. Pretraining's multi-scale
      crop always antialiases, as the reference's PIL resize.
    shuffle_buffer: samples held per worker for shuffling (memory: this many compressed clips).
    """
    shards: str
    mode: str = "pretrain"
    num_frames: int = 16
    input_size: int = 224
    batch_size: int = 8
    num_sample: int = 1
    workers: int = 4
    decoder: str = DEFAULT_DECODER
    shuffle_buffer: int = 100
    seed: int = 0
    resampled: bool | None = None
    stride: int | None = None
    sparse: bool = False
    flip: bool = True
    randaug: str | None = RANDAUG
    test_segments: int = 5
    test_crops: int = 3
    short_side: int | None = None
    antialias: bool = False

    def __post_init__(self):
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} must be one of {', '.join(MODES)}")
        if not self.shards:
            problems.append("shards is empty: give a shard pattern such as 'DIR/name-{000000..000009}.tar'")
        problems += common_problems(self, ("num_frames", "input_size", "batch_size", "num_sample", "test_segments",
                                           "test_crops"), ("stride",))
        if self.shuffle_buffer < 0:
            problems.append(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.decoder not in ("pyav", "decord"):
            problems.append(f"decoder {self.decoder!r} must be 'pyav' or 'decord'")
        if self.short_side is not None and self.short_side < self.input_size:
            problems.append(f"short_side {self.short_side} is smaller than the crop input_size {self.input_size}")
        if self.resampled and self.mode in ("val", "test"):
            problems.append(f"{self.mode} mode reads every video once: set resampled to False or None")
        raise_problems(self, problems)

    @classmethod
    def from_run(cls, run, **settings) -> "StreamConfig":
        """The stream a run (or eval) config reads: every field of ours that `run` has and sets (None there
        means the stream's default), then `settings` (mode, seed, ...)."""
        shared = {f.name: getattr(run, f.name) for f in fields(cls)
                  if getattr(run, f.name, None) is not None}
        return cls(**{**shared, **settings})

    @property
    def is_resampled(self) -> bool:
        return self.mode == "pretrain" if self.resampled is None else self.resampled

    @property
    def views(self) -> int:
        """Clips per video in a batch: num_sample (pretrain/train), 1 (val), segments x crops (test)."""
        return {"pretrain": self.num_sample, "train": self.num_sample, "val": 1,
                "test": self.test_segments * self.test_crops}[self.mode]


def shard_urls(shards: str) -> list[str]:
    """Every shard URL of a pattern: braces expanded, '::'-joined sets concatenated; a local shard folder
    stands for the shards its shards.json lists (so a user need not count them)."""
    urls = []
    for part in shards.split("::"):
        folder = _local_path(part)
        if folder is not None and folder.is_dir():
            urls += [str(folder / entry["file"]) for entry in read_shards_json(folder)["shards"]]
        else:
            urls += wds.shardlists.expand_urls(part)
    if not urls:
        raise ValueError(f"the shard pattern {shards!r} names no shard")
    return urls


def _local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        return Path(url[5:])
    return None if ":" in url.split("/")[0] else Path(url)


def shard_sizes(urls: list[str]) -> dict[str, int] | None:
    """Samples per shard from the shards.json next to each local shard; None if any is unknown."""
    sizes, tables = {}, {}
    for url in urls:
        path = _local_path(url)
        if path is None:
            return None
        index = path.parent / "shards.json"
        if index not in tables:
            if not index.is_file():
                return None
            info = json.loads(index.read_text())
            tables[index] = {Path(entry["file"]).name: int(entry["samples"]) for entry in info.get("shards", [])}
        if path.name not in tables[index]:
            return None
        sizes[url] = tables[index][path.name]
    return sizes


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """The shards a rank reads in a one-pass stream (round-robin over the URL list)."""
    return urls[rank::world_size]


def worker_shards(urls: list[str], worker: int, num_workers: int) -> list[str]:
    return urls[worker::num_workers]


def steps_per_epoch(cfg: StreamConfig, rank: int, world_size: int) -> int | None:
    """Batches per process per epoch. Training: the shard set's samples / (batch_size x world_size). Val/test:
    the exact number of batches this rank yields (every worker ends with a partial batch). None if unknown."""
    urls = shard_urls(cfg.shards)
    sizes = shard_sizes(urls)
    if sizes is None:
        return None
    if cfg.mode in ("pretrain", "train"):
        return sum(sizes.values()) // (cfg.batch_size * world_size)
    mine = rank_shards(urls, rank, world_size)
    per_worker = [sum(sizes[u] for u in worker_shards(mine, w, max(cfg.workers, 1)))
                  for w in range(max(cfg.workers, 1))]
    return sum(math.ceil(n / cfg.batch_size) for n in per_worker)


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
    """Decode and cut each sample into a dict (video, key, source, label). A sample that fails is logged and
    yields the int 1 instead, so the batching stage can count it."""
    decoder = get_decoder(cfg.decoder)
    labeled = cfg.mode != "pretrain"
    failures = 0
    for number, sample in enumerate(samples):
        key, url = sample.get("__key__"), sample.get("__url__")
        # One generator per sample, from (seed, rank, worker, pass, sample number): a sample's augmentation
        # does not depend on how many samples before it failed.
        rng = np.random.default_rng([*seed_words, number])
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
            yield 1
            continue
        failures = 0
        yield {"views": views, "key": key, "source": meta.get("source") or "", "label": label}


def _batches(items, cfg: StreamConfig):
    """Batches of batch_size videos, each carrying the failures counted since the previous batch. One-pass
    val/test streams end with their partial batch, possibly empty, so no failure goes uncounted; training
    streams drop a final partial batch (its failures were logged)."""
    batch, skipped = _Batch(cfg), 0
    for item in items:
        if isinstance(item, int):
            skipped += item
            continue
        batch.add(item)
        if len(batch) == cfg.batch_size:
            yield batch.finish(skipped)
            batch, skipped = _Batch(cfg), 0
    if cfg.mode in ("val", "test") and (len(batch) or skipped):
        yield batch.finish(skipped)


def _video_buffer(shape: tuple) -> torch.Tensor:
    """An uninitialised uint8 tensor; inside a DataLoader worker it lives in shared memory (as default_collate
    allocates), so the batch crosses to the main process without another copy."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class _Batch:
    """One batch being filled: each video's views are written into their rows as the video arrives (the
    layout transpose and the batch copy in one pass, while the views are still in cache), then dropped.

    A fresh buffer per batch: the DataLoader hands the batch's memory to the main process, which may hold it
    for any time, so it is never reused. Views of one video stay adjacent: pretrain/train `video`
    [B*views, 3, T, S, S] with key/source/label repeated per view; val [B, 3, T, S, S]; test [B, V, 3, T, S, S].
    """

    def __init__(self, cfg: StreamConfig):
        self.cfg = cfg
        self.shape = (3, cfg.num_frames, cfg.input_size, cfg.input_size)
        self.video = None  # allocated with the first video, so an empty final batch costs nothing
        self.keys, self.sources, self.labels = [], [], []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, item: dict):
        views = self.cfg.views
        if len(item["views"]) != views:
            raise ValueError(f"sample {item['key']} gave {len(item['views'])} views, the batch expects {views}")
        if self.video is None:
            self.video = _video_buffer((self.cfg.batch_size * views, *self.shape))
        row = len(self) * views
        for i, view in enumerate(item["views"]):
            transforms.write_cthw(view, self.video[row + i])
        self.keys.append(item["key"])
        self.sources.append(item["source"])
        self.labels.append(item["label"])

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
                 "skipped": skipped}
        if cfg.mode != "pretrain":
            batch["label"] = torch.tensor([x for x in self.labels for _ in range(repeat)], dtype=torch.int64)
        return batch


def _log_and_continue(err) -> bool:
    log.warning("shard read error, going on with the next shard: %s", err)
    return True


def _take(items, index: int, count: int):
    for i, item in enumerate(items):
        if i % count == index:
            yield item


class ClipStream(torch.utils.data.IterableDataset):
    """The per-worker pipeline; which shards it reads depends on (rank, world_size, worker)."""

    def __init__(self, cfg: StreamConfig, rank: int, world_size: int):
        super().__init__()
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.urls = shard_urls(cfg.shards)
        self.passes = 0

    def __iter__(self):
        cfg = self.cfg
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A fresh seed per pass over the stream, so each epoch of a persistent worker differs.
        seed_words = (cfg.seed, self.rank, worker, self.passes)
        if cfg.is_resampled:
            stages = [wds.ResampledShards(self.urls, seed=cfg.seed, deterministic=True,
                                          worker_seed=partial(_seed_of, seed_words))]
        else:
            # Training passes visit the shards in a new order each time (the same order on every rank and
            # worker, so the round-robin split stays a partition); val/test keep the listed order.
            order = _seed_of((cfg.seed, self.passes)) if cfg.mode in ("pretrain", "train") else None
            stages = [wds.SimpleShardList(self.urls, seed=order),
                      partial(_take, index=self.rank, count=self.world_size),
                      partial(_take, index=worker, count=num_workers)]
        stages.append(wds.tarfile_to_samples(handler=_log_and_continue))
        if cfg.mode in ("pretrain", "train") and cfg.shuffle_buffer > 1:
            stages.append(wds.shuffle(cfg.shuffle_buffer, initial=cfg.shuffle_buffer,
                                      rng=random.Random(_seed_of(seed_words))))
        stages += [partial(_clips, cfg=cfg, seed_words=seed_words), partial(_batches, cfg=cfg)]
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
    """(DataLoader over the stream for this rank, steps_per_epoch or None). Batches are dicts, see `collate`:
    `video` uint8, `key`, `source`, `label` (not in pretrain) int64, `skipped` (samples this worker could not
    decode since its previous batch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    urls = shard_urls(cfg.shards)
    missing = [u for u in urls if _local_path(u) is not None and not _local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(urls)} shards of {cfg.shards!r} do not exist, e.g. "
                                f"{missing[0]}: check the pattern and its brace range")
    if cfg.mode == "train" and cfg.randaug:
        # Build RandAugment (and import timm) once here: forked workers inherit it instead of each paying it.
        transforms.randaugment_transform(cfg.randaug, cfg.input_size)
    loader = torch.utils.data.DataLoader(
        ClipStream(cfg, rank, world_size), batch_size=None, num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0, pin_memory=torch.cuda.is_available(),
        worker_init_fn=partial(_seed_worker, cfg.seed, rank) if cfg.workers > 0 else None)
    return loader, steps_per_epoch(cfg, rank, world_size)
