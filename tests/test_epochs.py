"""Exact epochs: the plan deals every sample once over ranks x workers (equal whole batches per rank, counted
padding, shards split into ranges when they are fewer than the readers), and the real stream over real shards
(local, over HTTP, through pipe: commands) shows every key once per epoch, also across a resume."""
import itertools
import logging
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from finetune_data import labeled_shards
from http_server import RangeServer
from pretrain_data import make_shards

from vmae.cli.data import data
from vmae.errors import ConfigError
from vmae.shards.index import MissingIndexError, index_tars, read_index, shard_ends
from vmae.training.data import StreamConfig, make_loader
from vmae.training.epochs import plan_epoch, shard_order
from vmae.training.progress import EpochProgress, cut_records, record_path, resume_point, spent_positions
from vmae.training.sources import shard_sets, shard_urls

SIZES = [5, 2, 9]


def dealt(plan, sizes):
    """Per reader: the (shard, sample, position, repeat) of every slot, checked against the epoch's order."""
    order, starts = shard_order(sizes, 0, plan.epoch)
    first = dict(zip(order.tolist(), np.cumsum([0] + [sizes[i] for i in order])[:-1].tolist()))
    readers = []
    for ranges in plan.readers:
        slots = []
        for r in ranges:
            assert 0 <= r.start < r.stop <= sizes[r.shard]
            # position p is the p-th sample of the epoch's order: shards in order, each from its start on
            assert r.pos == first[r.shard] + (r.start - starts[r.shard]) % sizes[r.shard]
            slots += [(r.shard, s, r.pos + s - r.start, r.repeat) for s in range(r.start, r.stop)]
        readers.append(slots)
    return readers


@pytest.mark.parametrize("ranks,workers,batch,accum", [
    (1, 1, 1, 1), (2, 2, 2, 1), (2, 3, 1, 2), (3, 2, 4, 1), (4, 4, 1, 1), (8, 1, 2, 1), (2, 2, 16, 1)])
def test_plan_deals_every_sample_once_with_equal_whole_steps(ranks, workers, batch, accum):
    n = sum(SIZES)
    plan = plan_epoch(SIZES, seed=0, epoch=3, ranks=ranks, workers=workers, batch_size=batch, accum_steps=accum)
    readers = dealt(plan, SIZES)
    per_rank = [sum(len(r) for r in readers[k * workers:(k + 1) * workers]) for k in range(ranks)]
    assert per_rank == [plan.batches * batch] * ranks and plan.batches % accum == 0
    assert all(len(r) % batch == 0 for r in readers)
    counts = [len(r) // batch for r in readers[:workers]]
    assert max(counts) - min(counts) <= 1  # workers as even as whole batches allow
    slots = [s for r in readers for s in r]
    assert sorted(pos for *_, pos, repeat in slots if not repeat) == list(range(n))
    assert plan.padding == sum(repeat for *_, repeat in slots) == len(slots) - n < ranks * batch * accum
    assert Counter((shard, sample) for shard, sample, *_ in slots).keys() == {
        (s, i) for s, size in enumerate(SIZES) for i in range(size)}


def test_plan_orders_shards_anew_each_epoch_and_resumes_with_what_is_left():
    sizes = [3] * 12
    orders = {tuple(shard_order(sizes, 0, e)[0]) for e in range(5)}
    assert len(orders) == 5 and tuple(shard_order(sizes, 0, 2)[0]) == tuple(shard_order(sizes, 0, 2)[0])
    assert len({tuple(shard_order(sizes, 0, e)[1]) for e in range(5)}) == 5  # each shard's start changes too
    spent = np.zeros(36, bool)
    spent[np.random.default_rng(0).choice(36, 20, replace=False)] = True
    plan = plan_epoch(sizes, seed=0, epoch=1, ranks=2, workers=2, batch_size=2, spent=spent)
    slots = [s for r in dealt(plan, sizes) for s in r]
    assert sorted(pos for *_, pos, repeat in slots if not repeat) == np.flatnonzero(~spent).tolist()
    assert (plan.spent, plan.padding, plan.batches) == (20, 0, 4)
    done = plan_epoch(sizes, 0, 1, 2, 2, 2, spent=np.ones(36, bool))
    assert done.batches == 0 and not any(done.readers)
    with pytest.raises(ValueError, match="covers 5 samples"):
        plan_epoch(sizes, 0, 1, 2, 2, 2, spent=np.zeros(5, bool))


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """3 shards of uneven size (3, 3, 1 videos), written by vmae's shard writer (with index.parquet)."""
    root = tmp_path_factory.mktemp("epochs")
    pattern = make_shards(root, videos=7, per_shard=3)
    return pattern, root / "shards"


def stream(pattern, **options):
    defaults = dict(shards=pattern, mode="pretrain", num_frames=4, input_size=32, batch_size=2, workers=2)
    return StreamConfig(**{**defaults, **options})


def epoch_keys(cfg, world_size, epoch=0, spent=None, take=None):
    """Per rank: the keys and positions of the batches of one epoch (the first `take` batches if given)."""
    out = []
    for rank in range(world_size):
        loader, steps = make_loader(cfg, rank, world_size)
        plan = loader.dataset.set_epoch(epoch, spent)
        keys, pos = [], []
        for i, batch in enumerate(loader):
            if i == take:
                break
            assert batch["video"].shape[0] == cfg.batch_size * cfg.num_sample
            keys += batch["key"][::cfg.num_sample]
            pos += batch["pos"][::cfg.num_sample].tolist()
        out.append((keys, pos, plan, steps))
    return out


ALL_KEYS = {f"v{i:03d}" for i in range(7)}


@pytest.mark.parametrize("options,world_size", [
    (dict(workers=2, batch_size=2), 2),  # 4 readers over 3 shards: shards split into ranges
    (dict(workers=0, batch_size=1, accum_steps=2, num_sample=2), 2),
    (dict(workers=2, batch_size=3), 1)])
def test_one_epoch_shows_every_key_once_plus_counted_padding(shard_set, options, world_size):
    cfg = stream(shard_set[0], **options)
    ranks = epoch_keys(cfg, world_size, epoch=1)
    keys = [k for r in ranks for k in r[0]]
    plan, steps = ranks[0][2], ranks[0][3]
    assert {len(r[0]) for r in ranks} == {steps * cfg.batch_size}  # every rank the same whole batches
    assert set(keys) == ALL_KEYS and len(keys) == 7 + plan.padding and 0 <= plan.padding < 4
    assert sorted(set(p for r in ranks for p in r[1])) == list(range(7))


def test_resume_mid_epoch_deals_exactly_the_samples_not_yet_spent(shard_set):
    cfg = stream(shard_set[0], batch_size=1, shuffle_buffer=3)
    first = epoch_keys(cfg, 2, epoch=2, take=2)  # 2 of 4 batches per rank
    spent = np.zeros(7, bool)
    spent[[p for r in first for p in r[1]]] = True
    rest = epoch_keys(cfg, 2, epoch=2, spent=spent)
    assert rest[0][2].spent == 4 and [len(r[0]) for r in rest] == [2, 2]
    before, after = [k for r in first for k in r[0]], [k for r in rest for k in r[0]]
    assert not set(before) & set(after)  # the resumed epoch's padding repeats one of its own samples
    assert set(before) | set(after) == ALL_KEYS and len(before) + len(after) == 8


def test_failed_samples_keep_their_slot_and_are_counted(tmp_path, caplog):
    pattern = make_shards(tmp_path, videos=3, per_shard=2, corrupt=2)  # v003, v004 do not decode
    cfg = stream(pattern, batch_size=2, workers=0, shuffle_buffer=0)
    loader, steps = make_loader(cfg)
    with caplog.at_level(logging.WARNING, logger="vmae.training.data"):
        out = list(loader)
    assert len(out) == steps == 3 and sum(b["skipped"] for b in out) == 2
    pos = [p for b in out for p in b["pos"].tolist()]
    assert set(pos) == set(range(5)) and len(pos) == 6  # 5 positions spent + 1 padding
    assert {k for b in out for k in b["key"]} == {"v000", "v001", "v002"}  # repeats fill the failed slots
    assert sum("skipping sample" in r.getMessage() for r in caplog.records) == 2


def test_exact_epochs_over_http_and_pipes(shard_set, tmp_path):
    pattern, root = shard_set
    server = RangeServer(root)
    try:
        url = f"{server.url}/{pattern.rsplit('/', 1)[1]}"
        assert shard_urls(server.url + "/") == shard_urls(url)  # the folder form reads shards.json over HTTP
        ranks = epoch_keys(stream(url), 2)
        assert {k for r in ranks for k in r[0]} == ALL_KEYS
        assert any(path.endswith(".tar") for path in server.hits) and "/index.parquet" in server.hits
        loader, steps = make_loader(stream(url, resampled=True))  # whole shards, drawn with replacement
        assert steps == 7 // 2 and set(next(iter(loader))["key"]) <= ALL_KEYS
    finally:
        server.close()
    # pipe: commands, with the index found beside the file they name, or given with `index`
    assert {k for r in epoch_keys(stream(f"pipe:cat {pattern}"), 2) for k in r[0]} == ALL_KEYS
    moved = tmp_path / "moved"
    moved.mkdir()
    for i in range(3):
        shutil.copy(root / f"uh-{i:06d}.tar", moved)
    piped = f"pipe:cat {moved}/uh-{{000000..000002}}.tar"
    with pytest.raises(MissingIndexError, match="index.parquet not found"):
        make_loader(stream(piped))
    ranks = epoch_keys(replace(stream(piped), index=str(root / "index.parquet")), 2)
    assert {k for r in ranks for k in r[0]} == ALL_KEYS
    with pytest.raises(MissingIndexError, match="cannot tell where"):
        shard_ends([["pipe:fetch-shard 7"]])
    with pytest.raises(MissingIndexError, match="does not list the shard"):
        shard_ends([[f"{root}/other-000000.tar"]], index=str(root / "index.parquet"))


def test_index_of_foreign_tars_equals_the_writers(shard_set, tmp_path):
    pattern, root = shard_set
    written = read_index(root).sort_values(["shard", "offset"]).reset_index(drop=True)
    made = index_tars(shard_urls(pattern)).to_pandas().sort_values(["shard", "offset"]).reset_index(drop=True)
    assert made.equals(written[made.columns.tolist()])
    # vmae-data index writes it for shards without one (here read through a pipe), then exact epochs work
    for i in range(3):
        shutil.copy(root / f"uh-{i:06d}.tar", tmp_path)
    piped = f"pipe:cat {tmp_path}/uh-{{000000..000002}}.tar"
    result = CliRunner().invoke(data, ["index", piped, "--out", str(tmp_path)])
    assert result.exit_code == 0 and "14 members of 3 shards" in result.output, result.output
    assert read_index(tmp_path).equals(read_index(root)[read_index(tmp_path).columns.tolist()])
    assert {k for r in epoch_keys(stream(piped, workers=0), 1) for k in r[0]} == ALL_KEYS
    assert CliRunner().invoke(data, ["index", "pipe:cat x.tar"]).exit_code == 2  # where to? --out


def test_shards_fewer_than_readers_are_read_in_ranges(shard_set):
    pattern, _ = shard_set
    plan = plan_epoch([len(e) for e in shard_ends(shard_sets(pattern))], 0, 0, ranks=2, workers=3, batch_size=1)
    shared = Counter(r.shard for ranges in plan.readers for r in ranges if not r.repeat)
    assert max(shared.values()) > 1  # some shard is read by several readers, each its own range
    assert len(list(itertools.chain(*plan.readers))) >= 6


def test_progress_records_what_was_trained_and_a_resume_cuts_the_rest(tmp_path):
    def batch(keys, pos):
        return {"key": [k for k in keys for _ in range(2)], "pos": torch.tensor([p for p in pos for _ in range(2)])}

    progress = EpochProgress(tmp_path, rank=0, samples=6, views=2, record=True)
    progress.begin(4)
    progress.consume(batch(["a", "b"], [0, 3]))
    state = progress.state("cpu")
    progress.consume(batch(["c", "d"], [1, 5]))  # trained after the checkpoint, then killed
    progress.close()
    assert state["epoch"] == 4 and spent_positions(state).tolist() == [True, False, False, True, False, False]
    later = record_path(tmp_path, 5, 0)
    later.write_text("e\n")
    cut_records(tmp_path, state)
    assert record_path(tmp_path, 4, 0).read_text() == "a\nb\n" and not later.exists()
    resumed = EpochProgress(tmp_path, rank=0, samples=6, views=2, record=True)
    resumed.begin(4, spent_positions(state))
    resumed.consume(batch(["c", "e"], [1, 2]))
    assert not resumed.done
    resumed.consume(batch(["d", "f"], [4, 5]))
    assert resumed.done
    resumed.close()
    assert record_path(tmp_path, 4, 0).read_text().split() == ["a", "b", "c", "e", "d", "f"]
    cut_records(tmp_path, None)  # a fresh start: no record of another run stays
    assert not any((tmp_path / "samples").iterdir())


def test_eval_stream_over_http_reads_every_video_once(tmp_path_factory):
    pattern = labeled_shards(tmp_path_factory, "evalhttp", [3, 2], seed=3)
    root, name = pattern.rsplit("/", 1)
    server = RangeServer(root)
    try:
        cfg = StreamConfig(shards=f"{server.url}/{name}", mode="test", num_frames=4, input_size=32, batch_size=2,
                           workers=2, test_segments=2, test_crops=1)
        loader, steps = make_loader(cfg, rank=0, world_size=1)
        out = list(loader)
    finally:
        server.close()
    assert steps == len(out) == 3  # counted from the index over HTTP: 3 + 2 videos, one shard per worker
    assert sorted(k for b in out for k in b["key"]) == [f"evalhttp_{i:04d}" for i in range(5)]


def test_resume_point_goes_on_where_the_checkpoint_stopped_and_refuses_what_cannot_be_exact():
    spent = np.array([True, False, True, True, False, False])
    data = {"stream": "exact", "epoch": 2, "samples": 6, "spent": torch.from_numpy(np.packbits(spent)),
            "position": 2, "unit": 4, "replay": False}
    epoch, left, skip = resume_point(data, samples=6, unit=4, replay=False)
    assert (epoch, left.tolist(), skip) == (2, spent.tolist(), 0)
    assert resume_point(data, 6, 4, replay=True)[1] is not None  # a run that was not replayable is not replayed
    assert resume_point({**data, "replay": True}, 6, 4, replay=True) == (2, None, 2)
    done = {**data, "spent": torch.from_numpy(np.packbits(np.ones(6, bool)))}
    assert resume_point(done, 6, 8, replay=False) == (3, None, 0)  # an epoch-end checkpoint: any global batch
    with pytest.raises(ConfigError, match="same shard set"):
        resume_point(data, samples=7, unit=4, replay=False)
    with pytest.raises(ConfigError, match="videos per optimiser step"):
        resume_point(data, samples=6, unit=8, replay=False)
