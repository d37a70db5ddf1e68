"""Frame and crop positions: the reference's hand-computed examples, properties, and real decodes of videos
whose frames carry their own index."""
import numpy as np
import pytest
from videos import make_index_video, read_index

from vmae.training import sampling
from vmae.training.decode import get_decoder


def rng(seed=0):
    return np.random.default_rng(seed)


def reference_pretrain(n, num_frames, stride, start):
    """The reference's 1-based cursor loop, written out literally for comparison."""
    cursor, ids = start + 1, []
    for _ in range(num_frames):
        ids.append(cursor - 1)
        if cursor + stride < n:
            cursor += stride
    return ids


def test_pretrain_examples_from_the_spec():
    assert sampling.pretrain_indices(30, 16, 4, rng()).tolist() == list(range(0, 29, 4)) + [28] * 8
    assert sampling.pretrain_indices(5, 16, 4, rng()).tolist() == [0] * 16
    starts = {int(sampling.pretrain_indices(65, 16, 4, rng(s))[0]) for s in range(60)}
    assert starts == {0, 1}


@pytest.mark.parametrize("n,stride", [(64, 4), (100, 4), (300, 4), (32, 2), (50, 2), (31, 2), (7, 2), (1, 4)])
def test_pretrain_matches_the_reference_loop_and_start_is_uniform(n, stride):
    span = 16 * stride
    starts = []
    for seed in range(200):
        ids = sampling.pretrain_indices(n, 16, stride, rng(seed))
        assert ids.dtype == np.int64 and ids.shape == (16,)
        assert ids.tolist() == reference_pretrain(n, 16, stride, int(ids[0]))
        starts.append(int(ids[0]))
    possible = set(range(max(n - span, 0) + 1))
    assert set(starts) <= possible
    if len(possible) <= 40:
        assert set(starts) == possible


def test_dense_examples_from_the_spec():
    assert sampling.dense_val_indices(40, 16, 4).tolist() == [0, 4, 8, 13, 17, 22, 26, 31, 35] + [39] * 7
    assert sampling.dense_val_indices(300, 16, 4).tolist() == [118, 122, 126, 130, 135, 139, 143, 147, 152, 156,
                                                               160, 164, 169, 173, 177, 181]
    views = sampling.dense_test_views(300, 16, 4, 5)
    assert [int(v[0]) for v in views] == [0, 56, 116, 176, 236]
    assert all(np.diff(v).tolist() == [4] * 15 for v in views)


def test_dense_train_window_and_short_videos():
    for seed in range(100):
        ids = sampling.dense_train_indices(200, 16, 4, rng(seed))
        end = None
        # Window [end-64, end): linspace of 16 points, last clipped to end-1.
        for e in range(64, 200):
            if np.array_equal(np.clip(np.linspace(e - 64, e, 16), e - 64, e - 1).astype(np.int64), ids):
                end = e
        assert end is not None
    # A short video is the same for train and val (no randomness left).
    assert np.array_equal(sampling.dense_train_indices(40, 16, 4, rng()), sampling.dense_val_indices(40, 16, 4))
    assert sampling.dense_val_indices(3, 16, 4).tolist() == [2] * 16


def test_dense_test_views_short_video_and_one_segment():
    views = sampling.dense_test_views(30, 16, 4, 5)
    # 8 strided frames, padded with the last to 16; no room to move, so every view is the same.
    assert all(v.tolist() == list(range(0, 29, 4)) + [28] * 8 for v in views)
    assert sampling.dense_test_views(300, 16, 4, 1)[0][0] == 4 * ((75 - 16) // 2)


def test_sparse_sampling():
    assert sampling.sparse_val_indices(40, 16).tolist() == [2 * s + 1 for s in range(16)]
    assert sampling.sparse_val_indices(10, 16).tolist() == [0] * 6 + list(range(10))
    assert sampling.sparse_train_indices(10, 16, rng()).tolist() == [0] * 6 + list(range(10))
    for seed in range(50):
        ids = sampling.sparse_train_indices(50, 16, rng(seed))
        assert all(3 * s <= i < 3 * s + 3 for s, i in enumerate(ids.tolist()))


def test_sparse_test_views_follow_the_reference_pooling():
    n, segments = 50, 2
    tick = n / 16
    pooled = sorted(int(c * tick / segments + tick * x) for c in range(segments) for x in range(16))
    views = sampling.sparse_test_views(n, 16, segments)
    assert [v.tolist() for v in views] == [pooled[0::2], pooled[1::2]]
    assert views[0].tolist() == [int(tick * x) for x in range(16)]


def test_crop_offsets():
    assert sampling.crop_offsets(397, 224, 3) == [0, 86, 173]
    assert sampling.crop_offsets(224, 224, 3) == [0, 0, 0]
    assert sampling.crop_offsets(300, 224, 1) == [38]
    with pytest.raises(ValueError):
        sampling.crop_offsets(200, 224, 3)


def test_invalid_lengths_are_rejected():
    with pytest.raises(ValueError):
        sampling.pretrain_indices(0, 16, 4, rng())


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    return {n: make_index_video(root / f"v{n}.mp4", n).read_bytes() for n in (5, 30, 90)}


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("n", [5, 30, 90])
def test_decoded_frames_are_the_sampled_ones(index_videos, n, stride):
    """Positions on real video: every frame the sampler names is the frame decoded (both backends)."""
    cases = [sampling.pretrain_indices(n, 16, stride, rng(n + stride)),
             sampling.dense_train_indices(n, 16, stride, rng(1)), sampling.dense_val_indices(n, 16, stride),
             sampling.sparse_val_indices(n, 16), *sampling.dense_test_views(n, 16, stride, 3)]
    for name in ("pyav", "decord"):
        with get_decoder(name).open(index_videos[n]) as reader:
            assert reader.num_frames == n
            for ids in cases:
                assert [read_index(f) for f in reader.get_frames(ids)] == ids.tolist()
