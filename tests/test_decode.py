"""Both decoder backends on real clips in memory: exact frame counts, exact frames, identical output,
the PyAV non-reference skip bit-identical to a full decode, corrupt data as DecodeError, flat memory."""
import resource

import numpy as np
import pytest
from videos import index_frames, make_index_video, read_index, write_video

from vmae.training.decode import DEFAULT_DECODER, DecodeError, PyAVReader, get_decoder

BACKENDS = ("pyav", "decord")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """name -> (bytes, true frame count); mkv and webm carry no frame count in the container."""
    root = tmp_path_factory.mktemp("clips")
    made = {
        "mp4": make_index_video(root / "a.mp4", 70, gop=16),
        # B-frames with a pyramid (some B-frames are references), long GOP: the skip has work to do.
        "mp4-bframes": make_index_video(root / "b.mp4", 90, size=(96, 128), gop=48,
                                        extra=("-bf", "3", "-x264-params", "b-pyramid=normal")),
        "mkv": make_index_video(root / "c.mkv", 50, gop=16),
        "webm": write_video(root / "d.webm", index_frames(40), codec="libvpx-vp9", extra=("-b:v", "1M")),
    }
    counts = {"mp4": 70, "mp4-bframes": 90, "mkv": 50, "webm": 40}
    return {name: (path.read_bytes(), counts[name]) for name, path in made.items()}


def full_decode(data):
    """Every frame, in order, by a plain sequential PyAV decode (the ground truth)."""
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mp4", "mp4-bframes", "mkv", "webm"])
def test_frame_count_and_frames(clips, backend, name):
    data, count = clips[name]
    with get_decoder(backend).open(data) as reader:
        assert reader.num_frames == count
        assert reader.fps == pytest.approx(30.0)
        assert (reader.height, reader.width) == ((96, 128) if name == "mp4-bframes" else (64, 64))
        wanted = [5, 3, 3, count - 1, 0, 31]
        frames = reader.get_frames(wanted)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (reader.height, reader.width, 3)
        assert [read_index(f) for f in frames] == wanted


@pytest.mark.parametrize("name", ["mp4", "mp4-bframes", "mkv", "webm"])
def test_backends_give_identical_frames(clips, name):
    data, count = clips[name]
    truth = full_decode(data)
    for backend in BACKENDS:
        with get_decoder(backend).open(data) as reader:
            assert np.array_equal(reader.get_frames(range(count)), truth)


def test_nonref_skip_is_bit_identical_and_skips(clips):
    data, count = clips["mp4-bframes"]
    truth = full_decode(data)
    rng = np.random.default_rng(0)
    with PyAVReader(data) as fast, PyAVReader(data, skip_nonref=False) as plain:
        for _ in range(40):
            start = int(rng.integers(count - 20))
            ids = np.sort(rng.choice(np.arange(start, start + 20), size=int(rng.integers(1, 8))))
            assert np.array_equal(fast.get_frames(ids), truth[ids])
            assert np.array_equal(plain.get_frames(ids), truth[ids])
        # The skip really drops pictures: fewer frames leave the decoder for a sparse window.
        counted = {}
        for reader in (fast, plain):
            before = reader.decoded
            reader.get_frames([60, 64, 68])
            counted[reader is fast] = reader.decoded - before
        assert 3 <= counted[True] < counted[False]


def test_reads_can_repeat_and_go_backwards(clips):
    data, _ = clips["mp4-bframes"]
    truth = full_decode(data)
    with get_decoder("pyav").open(data) as reader:
        for ids in ([80, 81], [2, 40], [40, 2, 2], [89]):
            assert np.array_equal(reader.get_frames(ids), truth[ids])


def test_requests_in_order_go_on_without_seeking_back_and_stay_exact(clips):
    """Window after window, the reader goes on from where it stopped; a request behind that point, or one
    whose picture the last request skipped, seeks back to its keyframe. Every frame stays exact."""
    for name, chunks in (("mp4", [list(range(lo, lo + 7)) for lo in range(0, 70, 7)]),
                         ("mp4-bframes", [list(range(lo, lo + 9, 2)) for lo in range(0, 80, 9)])):
        data, _ = clips[name]
        truth = full_decode(data)
        with PyAVReader(data) as reader:
            for ids in chunks:
                assert np.array_equal(reader.get_frames(ids), truth[ids]), (name, ids)
            if name == "mp4":  # no B-frames: one seek for the whole pass, each frame decoded once
                assert reader.seeks == 1 and reader.decoded == chunks[-1][-1] + 1
            assert reader.seeks < len(chunks)
            before = reader.seeks
            assert np.array_equal(reader.get_frames([3, 4]), truth[[3, 4]])  # behind: a seek
            assert reader.seeks == before + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_requests_and_corrupt_data(clips, backend):
    data, count = clips["mp4-bframes"]
    decoder = get_decoder(backend)
    with decoder.open(data) as reader:
        with pytest.raises(IndexError):
            reader.get_frames([count])
        with pytest.raises(ValueError):
            reader.get_frames([])
    broken = {"random": np.random.default_rng(0).bytes(4000), "empty": b"", "truncated": data[:len(data) // 2],
              "zeroed": data[:1000] + bytes(1500) + data[2500:]}
    for name, bad in broken.items():
        with pytest.raises(DecodeError):
            with decoder.open(bad) as reader:
                reader.get_frames(range(reader.num_frames))


def test_unknown_backend_and_default():
    assert DEFAULT_DECODER == "pyav"
    with pytest.raises(ValueError, match="unknown decoder"):
        get_decoder("opencv")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_pyav_memory_stays_flat(tmp_path):
    data = make_index_video(tmp_path / "m.mp4", 64, size=(96, 128), gop=16).read_bytes()
    decoder = get_decoder("pyav")

    def decode_some(k):
        for i in range(k):
            with decoder.open(data) as reader:
                reader.get_frames(np.arange(i % 48, i % 48 + 16))

    decode_some(50)
    before = rss_mb()
    decode_some(400)
    assert rss_mb() - before < 15
