import av

from videos import make_index_video, read_index


def test_index_video_round_trip(tmp_path):
    path = make_index_video(tmp_path / "v.mp4", 40)
    with av.open(str(path)) as c:
        got = [read_index(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert got == list(range(40))
