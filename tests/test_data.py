"""The shard stream end to end on real tar shards: frame positions through crops (frames whose colour encodes
their index), batch shapes per mode, repeated augmentation, one-decode test views, corrupt clips skipped and
counted, rank splits, epoch length from shards.json."""
import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
import webdataset as wds
from videos import index_frames, write_video

from vmae.shards.format import encode_sample
from vmae.shards.index import MissingIndexError, index_tars, write_index
from vmae.training import sampling, transforms
from vmae.training.data import StreamConfig, make_loader
from vmae.training.decode import get_decoder
from vmae.training.sources import shard_urls

LEVELS = 8  # colour levels per channel: frame i is one flat colour, robust to crops, resizing and H.264


def colour_frames(n, size=(48, 64)):
    frames = np.zeros((n, *size, 3), np.uint8)
    for i in range(n):
        frames[i] = [16 + 32 * (i // LEVELS ** c % LEVELS) for c in range(3)]
    return frames


def clip_indices(clip: torch.Tensor) -> list[int]:
    """Frame indices of a uint8 clip [3, T, H, W] made of colour_frames."""
    levels = np.clip(np.round((clip.float().mean((2, 3)).numpy() - 16) / 32), 0, LEVELS - 1).astype(int)
    return [int(levels[0, t] + LEVELS * levels[1, t] + LEVELS ** 2 * levels[2, t]) for t in range(clip.shape[1])]


# key -> (frames, stride in KEY.json or None, label)
VIDEOS = {"long4": (100, 4, 0), "long2": (80, 2, 1), "short4": (30, 4, 2), "tiny": (5, 4, 0),
          "nostride": (70, None, 1), "mid2": (40, 2, 2)}


def write_shards(root, name, groups, make_frames=colour_frames, labeled=True, index=True, extra=()):
    """Shards NAME-%06d.tar, one per group of (key, n, stride, label), plus shards.json and index.parquet;
    returns the pattern."""
    root.mkdir(parents=True, exist_ok=True)
    listed = []
    for s, group in enumerate(groups):
        file = f"{name}-{s:06d}.tar"
        with wds.TarWriter(str(root / file)) as sink:
            for key, n, stride, label in group:
                data = write_video(root / f"{key}.mp4", make_frames(n)).read_bytes()
                row = {"key": key, "source": "k400" if n % 2 else "ssv2", "stride": stride, "label_id": label}
                sink.write(encode_sample(row, data, labeled))
            for key, data in extra if s == len(groups) - 1 else ():
                sink.write(encode_sample({"key": key, "source": "k400", "label_id": 0}, data, labeled))
        listed.append({"file": file, "samples": len(group) + (len(extra) if s == len(groups) - 1 else 0)})
    if index:
        total = sum(s["samples"] for s in listed)
        (root / "shards.json").write_text(json.dumps({"shards": listed, "totals": {"samples": total}}))
        write_index(root, index_tars([str(root / s["file"]) for s in listed]))
    return str(root / f"{name}-{{000000..{len(groups) - 1:06d}}}.tar")


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory):
    rows = [(k, n, s, label) for k, (n, s, label) in VIDEOS.items()]
    return write_shards(tmp_path_factory.mktemp("colour"), "col", [rows[:3], rows[3:]])


def batches(cfg, count=None, rank=0, world_size=1):
    loader, _ = make_loader(cfg, rank, world_size)
    out = []
    for batch in loader:
        out.append(batch)
        if count is not None and len(out) == count:
            break
    return out


def pretrain_patterns(n, stride):
    span = 16 * stride
    return {tuple(sampling.pretrain_indices(n, 16, stride, _FixedStart(s)).tolist())
            for s in range(max(n - span, 0) + 1)}


class _FixedStart:
    """Stands in for a Generator so every allowed start can be enumerated."""

    def __init__(self, start):
        self.start = start

    def integers(self, high):
        return self.start


def test_pretrain_positions_views_and_shapes(colour_shards):
    cfg = StreamConfig(shards=colour_shards, mode="pretrain", input_size=32, batch_size=2, num_sample=2,
                       workers=2, seed=1, resampled=True)
    seen = set()
    for batch in batches(cfg, count=20):
        video = batch["video"]
        assert video.dtype == torch.uint8 and video.shape == (4, 3, 16, 32, 32)
        assert set(batch) == {"video", "key", "source", "pos", "skipped"} and batch["skipped"] == 0
        assert batch["key"][0::2] == batch["key"][1::2]  # the views of one video are adjacent
        for row in range(4):
            n, stride, _ = VIDEOS[batch["key"][row]]
            ids = tuple(clip_indices(video[row]))
            assert ids in pretrain_patterns(n, stride or 4), (batch["key"][row], ids)
        for row in (0, 2):
            assert clip_indices(video[row]) == clip_indices(video[row + 1])  # one decode for both views
        seen.update(batch["key"])
    assert seen == set(VIDEOS)


def test_repeated_augmentation_gives_different_crops_of_one_decode(tmp_path):
    pattern = write_shards(tmp_path, "ra", [[("a", 64, 4, 0), ("b", 64, 4, 1)]],
                           make_frames=lambda n: index_frames(n, (64, 96)))
    cfg = StreamConfig(shards=pattern, mode="pretrain", num_frames=8, input_size=32, batch_size=2, num_sample=4,
                       workers=0)
    video = batches(cfg, count=1)[0]["video"]
    assert video.shape == (8, 3, 8, 32, 32)
    views = video[:4]
    assert any(not torch.equal(views[0], views[i]) for i in range(1, 4))


def dense_train_patterns(n, stride):
    if n <= 16 * stride:
        return {tuple(sampling.dense_val_indices(n, 16, stride).tolist())}
    return {tuple(np.clip(np.linspace(e - 16 * stride, e, 16), e - 16 * stride, e - 1).astype(int).tolist())
            for e in range(16 * stride, n)}


@pytest.mark.parametrize("sparse", [False, True])
def test_train_positions_labels_and_flip(colour_shards, sparse):
    cfg = StreamConfig(shards=colour_shards, mode="train", input_size=32, batch_size=3, num_sample=2, workers=2,
                       randaug=None, sparse=sparse, resampled=True)
    for batch in batches(cfg, count=4):
        assert batch["video"].shape == (6, 3, 16, 32, 32)
        assert batch["label"].dtype == torch.int64
        assert batch["label"].tolist() == [VIDEOS[k][2] for k in batch["key"]]
        for row, key in enumerate(batch["key"]):
            n, stride, _ = VIDEOS[key]
            ids = clip_indices(batch["video"][row])
            if sparse:
                seg = n // 16
                expected = [0] * (16 - n) + list(range(n)) if seg == 0 else None
                assert ids == expected if expected else all(s * seg <= i < (s + 1) * seg for s, i in enumerate(ids))
            else:
                assert tuple(ids) in dense_train_patterns(n, stride or 4)


def test_train_with_randaugment_shapes(colour_shards):
    cfg = StreamConfig(shards=colour_shards, mode="train", input_size=32, batch_size=2, num_sample=2, workers=2,
                       resampled=True)
    batch = batches(cfg, count=1)[0]
    assert batch["video"].shape == (4, 3, 16, 32, 32) and batch["video"].dtype == torch.uint8


@pytest.mark.parametrize("sparse", [False, True])
def test_val_is_one_centre_view_of_every_video_once(colour_shards, sparse):
    cfg = StreamConfig(shards=colour_shards, mode="val", input_size=32, batch_size=4, workers=2, sparse=sparse)
    keys = []
    for batch in batches(cfg):
        assert batch["video"].dtype == torch.uint8 and batch["video"].shape[1:] == (3, 16, 32, 32)
        for clip, key in zip(batch["video"], batch["key"]):
            n, stride, label = VIDEOS[key]
            expected = (sampling.sparse_val_indices(n, 16) if sparse
                        else sampling.dense_val_indices(n, 16, stride or 4))
            assert clip_indices(clip) == expected.tolist()
        keys += batch["key"]
    assert sorted(keys) == sorted(VIDEOS)


@pytest.fixture(scope="module")
def pattern_shards(tmp_path_factory):
    """Textured (non-uniform) 64x96 frames, so a crop in the wrong place shows."""
    root = tmp_path_factory.mktemp("pattern")
    rows = [("p0", 90, 4, 0), ("p1", 30, 4, 1), ("p2", 60, 2, 2)]
    return write_shards(root, "pat", [rows], make_frames=lambda n: index_frames(n, (64, 96))), root


@pytest.mark.parametrize("sparse", [False, True])
def test_test_views_from_one_decode_match_per_view_decodes(pattern_shards, sparse):
    pattern, root = pattern_shards
    cfg = StreamConfig(shards=pattern, mode="test", num_frames=8, input_size=48, short_side=56,
                       batch_size=2, workers=2, test_segments=3, test_crops=2, sparse=sparse)
    got = {}
    for batch in batches(cfg):
        assert batch["video"].shape[1:] == (6, 3, 8, 48, 48) and batch["video"].dtype == torch.uint8
        got.update(zip(batch["key"], batch["video"]))
    assert sorted(got) == ["p0", "p1", "p2"]
    strides = {"p0": 4, "p1": 4, "p2": 2}
    for key, views in got.items():
        with get_decoder("decord").open((root / f"{key}.mp4").read_bytes()) as reader:
            n = reader.num_frames
            segments = (sampling.sparse_test_views(n, 8, 3) if sparse
                        else sampling.dense_test_views(n, 8, strides[key], 3))
            expected = []
            for ids in segments:  # the reference's way: decode each view on its own
                clip = transforms.resize_short_side(transforms.as_clip(reader.get_frames(ids)), 56)
                expected += [c.permute(1, 0, 2, 3) for c in transforms.spatial_crops(clip, 48, 2)]
        assert torch.equal(views, torch.stack(expected))


def test_backends_give_the_same_batches(pattern_shards):
    results = []
    for decoder in ("pyav", "decord"):
        cfg = StreamConfig(shards=pattern_shards[0], mode="val", num_frames=8, input_size=48, batch_size=3,
                           workers=0, decoder=decoder)
        results.append(batches(cfg)[0])
    assert results[0]["key"] == results[1]["key"]
    assert torch.equal(results[0]["video"], results[1]["video"])


def test_corrupt_clips_are_skipped_counted_and_logged(tmp_path, caplog):
    good = write_video(tmp_path / "g.mp4", colour_frames(20)).read_bytes()
    extra = [("garbage", b"not a video" * 50), ("truncated", good[: len(good) // 3])]
    pattern = write_shards(tmp_path, "bad", [[("ok1", 20, 4, 0)], [("ok2", 24, 4, 1)]], extra=extra)
    for workers in (0, 2):
        cfg = StreamConfig(shards=pattern, mode="val", input_size=32, batch_size=2, workers=workers)
        with caplog.at_level(logging.WARNING, logger="vmae.training.data"):
            out = batches(cfg)
        assert sorted(k for b in out for k in b["key"]) == ["ok1", "ok2"]
        assert sum(b["skipped"] for b in out) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("garbage" in m and "bad-000001.tar" in m for m in messages)
    assert any("truncated" in m for m in messages)
    # Failures after a worker's last video still reach the caller, in a final empty batch.
    cfg = StreamConfig(shards=pattern, mode="test", input_size=32, batch_size=1, workers=0, test_segments=2,
                       test_crops=1)
    last = batches(cfg)[-1]
    assert last["video"].shape == (0, 2, 3, 16, 32, 32) and last["key"] == [] and last["skipped"] == 2
    # Pretraining goes on past them too (and counts them).
    cfg = StreamConfig(shards=pattern, mode="pretrain", input_size=32, batch_size=2, workers=0, shuffle_buffer=0)
    assert sum(b["skipped"] for b in batches(cfg, count=6)) >= 2


def test_ranks_split_shards_disjointly_and_epoch_lengths(tmp_path):
    groups = [[(f"s{s}v{i}", 20, 4, i) for i in range(3)] for s in range(5)]
    pattern = write_shards(tmp_path, "split", groups)
    per_rank = []
    for rank in range(2):
        cfg = StreamConfig(shards=pattern, mode="val", input_size=32, batch_size=2, workers=2)
        loader, steps = make_loader(cfg, rank, 2)
        out = list(loader)
        assert steps == len(out)  # exact for val/test: one partial batch per worker at most
        per_rank.append({k for b in out for k in b["key"]})
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {k for g in groups for k, *_ in g}
    train = StreamConfig(shards=pattern, mode="train", input_size=32, batch_size=2, workers=1)
    assert make_loader(train, 0, 2)[1] == 4  # exact: 15 samples padded to 16 = 2 ranks x 4 batches of 2
    assert make_loader(replace(train, accum_steps=3), 0, 2)[1] == 6  # padded to 24: 2 steps of 3 batches
    assert make_loader(replace(train, resampled=True), 0, 2)[1] == 15 // 4
    # Two shard sets joined with '::'; no index in the second: a resampled stream's epoch length is unknown,
    # an exact stream cannot start.
    other = write_shards(tmp_path / "other", "o", [[("o1", 20, 4, 0)]], index=False)
    joined = StreamConfig(shards=f"{pattern}::{other}", mode="train", workers=0, resampled=True)
    assert make_loader(joined, 0, 1)[1] is None
    with pytest.raises(MissingIndexError, match="index.parquet not found"):
        make_loader(replace(joined, resampled=False))
    # A shard folder stands for the shards its shards.json lists, as the brace pattern does.
    assert shard_urls(str(tmp_path)) == shard_urls(pattern)
    assert make_loader(replace(train, shards=str(tmp_path)), 0, 2)[1] == 4
    with pytest.raises(FileNotFoundError, match="incomplete"):
        shard_urls(f"{pattern}::{tmp_path / 'other'}")


def test_one_pass_streams_end_and_resampled_ones_do_not(colour_shards):
    cfg = StreamConfig(shards=colour_shards, mode="pretrain", resampled=False, input_size=32, batch_size=2,
                       workers=0)
    out = batches(cfg)
    assert sorted(k for b in out for k in b["key"]) == sorted(VIDEOS)
    resampled = replace(cfg, resampled=True)
    assert len(batches(resampled, count=7)) == 7  # more than one pass of 6 videos


def test_unlabeled_shards_in_a_labeled_mode_and_bad_configs(tmp_path):
    pattern = write_shards(tmp_path, "nolabel", [[("u", 20, 4, 0)]], labeled=False)
    with pytest.raises(ValueError, match="no .cls label"):
        batches(StreamConfig(shards=pattern, mode="val", input_size=32, workers=0))
    with pytest.raises(ValueError, match="mode"):
        StreamConfig(shards=pattern, mode="finetune")
    with pytest.raises(ValueError, match="every video once"):
        StreamConfig(shards=pattern, mode="test", resampled=True)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        make_loader(StreamConfig(shards=str(tmp_path / "missing-{000000..000003}.tar")))
