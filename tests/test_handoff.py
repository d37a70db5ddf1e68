"""The worker hand-off: workers reuse their shared batch buffers, yet a batch the caller keeps is never
overwritten, and a stream through workers gives the same clips as the stream in this process."""
import pytest
import torch
from pretrain_data import make_shards

from vmae.training.data import StreamConfig, make_loader
from vmae.training.handoff import SLOT_KEY, BufferPool


def test_pool_reuses_a_released_buffer_and_never_a_held_one():
    pool = BufferPool(workers=2, size=2)
    shape = (2, 3)
    a, slot_a = pool.take(1, shape)
    b, slot_b = pool.take(1, shape)
    assert (slot_a, slot_b) == (0, 1) and a.is_shared() and pool.busy[1].tolist() == [1, 1]
    fresh, slot = pool.take(1, shape)  # both held: a fresh, untracked buffer
    assert slot is None and fresh.data_ptr() not in (a.data_ptr(), b.data_ptr())
    pool.busy[1, 0] = 0  # the main process released slot 0
    again, slot = pool.take(1, shape)
    assert slot == 0 and again.data_ptr() == a.data_ptr()
    assert pool.take(0, shape)[1] == 0  # the other worker's slots are its own


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("handoff"), videos=24, frames=24, per_shard=6)


def clips(pattern, workers, keep):
    """{(epoch position, view): clip} over one exact epoch; keep=False copies each batch and drops it, as a training
    loop does (the workers then reuse buffers), keep=True holds every batch until the end."""
    cfg = StreamConfig(shards=pattern, mode="pretrain", num_frames=4, input_size=32, batch_size=2, num_sample=2,
                       workers=workers, seed=3)
    loader, _ = make_loader(cfg)
    kept, out = [], {}

    def views(batch, video):
        return {(pos, row % 2): clip for row, (pos, clip) in enumerate(zip(batch["pos"].tolist(), video))}

    for batch in loader:
        assert SLOT_KEY not in batch
        if keep:
            kept.append(batch)
        else:
            out.update(views(batch, batch["video"].clone()))
    for batch in kept:
        out.update(views(batch, batch["video"]))
    return out, loader.pool


def test_batches_through_workers_equal_the_in_process_stream_kept_or_not(shards):
    expected, _ = clips(shards, 0, keep=False)
    dropped, pool = clips(shards, 2, keep=False)
    kept, _ = clips(shards, 2, keep=True)
    assert len(expected) == 48  # 24 videos x 2 views
    for pos, video in expected.items():
        assert torch.equal(dropped[pos], video) and torch.equal(kept[pos], video), pos
    assert pool.busy.sum() <= 2 * 2  # held at the end: at most the last batches of each worker
