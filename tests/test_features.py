"""extract-features: the window rule, exact counts and shapes, equality with a direct forward, bad inputs."""

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner

from videos import index_frames, read_index, write_video
from vmae.cli.train import train
from vmae.shards.format import encode_sample
from vmae.errors import ConfigError
from vmae.training.config import FeatureConfig
from vmae.training.decode import get_decoder
from vmae.training.features import extract_features, window_indices, window_starts
from vmae.training.models import create_model
from vmae.training.transforms import as_clip, normalize, resize

FRAMES, SIZE = 4, 32  # vit_test clips: 4 frames of 32x32


@pytest.mark.parametrize("n,num_frames,window_stride,frame_stride,count", [
    (100, 16, 4, 1, 22),   # (100 - 16) // 4 + 1
    (16, 16, 4, 1, 1),     # exactly one window
    (19, 16, 4, 1, 1),     # 19 - 16 = 3 < 4: the second window would run past the end
    (20, 16, 4, 1, 2),
    (10, 16, 4, 1, 1),     # shorter than a window: one padded window
    (67, 16, 8, 2, 5),     # span 31: (67 - 31) // 8 + 1
    (40, 4, 3, 2, 12),     # span 7: (40 - 7) // 3 + 1
])
def test_window_counts(n, num_frames, window_stride, frame_stride, count):
    ids = window_indices(n, num_frames, window_stride, frame_stride)
    assert ids.shape == (count, num_frames)
    assert ids.max() <= n - 1
    assert len(window_starts(n, num_frames, window_stride, frame_stride)) == count


def test_window_positions_by_hand():
    assert window_indices(12, 4, 3, 2).tolist() == [[0, 2, 4, 6], [3, 5, 7, 9]]  # start 6 would need frame 12
    assert window_indices(5, 4, 3, 2).tolist() == [[0, 2, 4, 4]]  # padded with the last frame
    assert window_indices(20, 16, 4, 1)[1].tolist() == list(range(4, 20))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vit_test", num_classes=5, num_frames=FRAMES, img_size=SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "ft.pth"
    torch.save({"model": model.state_dict()}, path)
    return path, model.eval()


def _cfg(checkpoint, out, **kw):
    return FeatureConfig(checkpoint=str(checkpoint), model="vit_test", out=str(out), num_frames=FRAMES,
                         input_size=SIZE, window_stride=3, frame_stride=2, batch_size=5, device="cpu", **kw)


def _direct(model, data: bytes, ids: np.ndarray) -> np.ndarray:
    """The expected features computed the plain way: decode each window's frames, resize, normalise, forward."""
    rows = []
    with get_decoder().open(data) as reader:
        for window in ids:
            clip = resize(as_clip(reader.get_frames(window)), SIZE, SIZE)  # [T, 3, S, S]
            with torch.no_grad():
                rows.append(model.forward_features(normalize(clip.permute(1, 0, 2, 3)[None]))[0])
    return torch.stack(rows).numpy()


def test_features_from_a_folder_of_videos(tmp_path, checkpoint):
    path, model = checkpoint
    videos = tmp_path / "videos"
    write_video(videos / "long.mp4", index_frames(40, (48, 64)))
    write_video(videos / "sub" / "short.mp4", index_frames(5, (64, 48)))
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    (videos / "notes.txt").write_text("ignored")
    report = extract_features(_cfg(path, tmp_path / "out", videos=str(videos)))
    assert report["videos"] == 3 and report["ok"] == 2 and report["failed"] == 1
    assert report["windows"] == 12 + 1 and report["feature_dim"] == 32

    long = np.load(tmp_path / "out" / "long.npy")
    short = np.load(tmp_path / "out" / "sub" / "short.npy")
    assert long.shape == (12, 32) and long.dtype == np.float32
    assert short.shape == (1, 32)
    data = (videos / "long.mp4").read_bytes()
    np.testing.assert_allclose(long, _direct(model, data, window_indices(40, FRAMES, 3, 2)), atol=1e-5)
    # the decoded frames of window 5 really are frames 15, 17, 19, 21
    with get_decoder().open(data) as reader:
        assert [read_index(f) for f in reader.get_frames(window_indices(40, FRAMES, 3, 2)[5])] == [15, 17, 19, 21]

    index = pd.read_parquet(tmp_path / "out" / "index.parquet").set_index("key")
    assert index.loc["broken", "status"] == "failed" and "DecodeError" in index.loc["broken", "error"]
    assert index.loc["long", "frames"] == 40 and index.loc["long", "windows"] == 12
    assert index.loc["sub/short", "windows"] == 1

    again = extract_features(_cfg(path, tmp_path / "out", videos=str(videos)))
    assert again["existing"] == 2 and again["ok"] == 0

    args = ["extract-features", "--checkpoint", str(path), "--model", "vit_test", "--videos", str(videos),
            "--out", str(tmp_path / "cli"), "--num-frames", "4", "--input-size", "32", "--window-stride", "3",
            "--frame-stride", "2", "--device", "cpu"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 0, result.output
    assert "3 videos: 2 extracted, 0 already there, 1 failed" in result.output and "13 windows" in result.output
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "long.npy"), long)
    result = CliRunner().invoke(train, args[:-2] + ["--shards", "x.tar"])
    assert result.exit_code == 2 and "exactly one of videos" in result.output


def test_the_input_shape_comes_from_the_checkpoint_and_is_named(tmp_path, checkpoint):
    path, model = checkpoint
    recorded = tmp_path / "recorded.pth"
    torch.save({"model": model.state_dict(), "config": {"model": "vit_test", "num_frames": FRAMES,
                                                        "input_size": SIZE}}, recorded)
    write_video(tmp_path / "videos" / "v.mp4", index_frames(12, (48, 64)))
    result = CliRunner().invoke(train, ["extract-features", "--checkpoint", str(recorded), "--videos",
                                        str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"num_frames {FRAMES} (checkpoint), img_size {SIZE} (checkpoint), tubelet_size 2 (checkpoint)" \
        in result.output
    assert "1 videos: 1 extracted" in result.output and "4 frames every 1" in result.output
    data = (tmp_path / "videos" / "v.mp4").read_bytes()
    expected = _direct(model, data, window_indices(12, FRAMES, 4, 1))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "v.npy"), expected, atol=1e-5)


def test_features_are_imagenet_normalised(tmp_path, checkpoint):
    path, model = checkpoint
    write_video(tmp_path / "v" / "a.mp4", index_frames(7, (32, 32)))
    extract_features(_cfg(path, tmp_path / "out", videos=str(tmp_path / "v")))
    feats = np.load(tmp_path / "out" / "a.npy")
    with get_decoder().open((tmp_path / "v" / "a.mp4").read_bytes()) as reader:
        clip = as_clip(reader.get_frames([0, 2, 4, 6])).permute(1, 0, 2, 3)[None]
    with torch.no_grad():
        plain = model.forward_features(clip.float() / 255)[0].numpy()  # the reference's TAD input
    np.testing.assert_allclose(feats[0], _direct(model, (tmp_path / "v" / "a.mp4").read_bytes(),
                                                 window_indices(7, FRAMES, 3, 2))[0], atol=1e-5)
    assert not np.allclose(feats[0], plain, atol=1e-3)


def test_features_from_shards_and_a_pretrain_checkpoint(tmp_path):
    pretrain = create_model("pretrain_videomae_test", num_frames=FRAMES, img_size=SIZE)
    torch.save({"model": pretrain.state_dict()}, tmp_path / "pt.pth")
    shard = tmp_path / "shards" / "s-000000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        for key, n in (("clip_a", 9), ("clip_b", 13)):
            write_video(tmp_path / f"{key}.mp4", index_frames(n, (32, 32)))
            row = {"key": key, "label_id": 1}
            sink.write(encode_sample(row, (tmp_path / f"{key}.mp4").read_bytes(), labeled=True))
    report = extract_features(_cfg(tmp_path / "pt.pth", tmp_path / "out", shards=str(shard)))
    assert report["ok"] == 2
    assert "fc_norm.weight" in report["model"]  # missing from a pretrain checkpoint, reported
    assert np.load(tmp_path / "out" / "clip_a.npy").shape == (1, 32)   # (9 - 7) // 3 + 1
    assert np.load(tmp_path / "out" / "clip_b.npy").shape == (3, 32)   # (13 - 7) // 3 + 1
    enc = pretrain.encoder.blocks[0].attn.qkv.weight
    model = create_model("vit_test", num_classes=0, num_frames=FRAMES, img_size=SIZE)
    model.load_state_dict({k[len("encoder."):]: v for k, v in pretrain.state_dict().items()
                           if k.startswith("encoder.") and not k.startswith("encoder.norm")}, strict=False)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, enc)
    expected = _direct(model.eval(), (tmp_path / "clip_b.mp4").read_bytes(), window_indices(13, FRAMES, 3, 2))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "clip_b.npy"), expected, atol=1e-5)


def test_config_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of videos"):
        FeatureConfig(checkpoint="c", out="o")
    with pytest.raises(ValueError, match="exactly one of videos"):
        FeatureConfig(checkpoint="c", out="o", videos="v", shards="s")


def test_reference_features_reproduce_the_tad_script(tmp_path, checkpoint):
    """--reference-features: frames /255 (no ImageNet statistics), resized as floats by F.interpolate (bilinear,
    no antialiasing) from a 48x64 source, model in fp32; written out here the way the reference's script does."""
    path, model = checkpoint
    write_video(tmp_path / "v" / "a.mp4", index_frames(9, (48, 64)))
    extract_features(_cfg(path, tmp_path / "ref", videos=str(tmp_path / "v"), reference_features=True))
    feats = np.load(tmp_path / "ref" / "a.npy")
    ids = window_indices(9, FRAMES, 3, 2)
    expected = []
    with get_decoder().open((tmp_path / "v" / "a.mp4").read_bytes()) as reader:
        for window in ids:
            video = torch.from_numpy(reader.get_frames(window)).permute(3, 0, 1, 2).to(torch.float32) / 255
            video = torch.nn.functional.interpolate(video, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            with torch.no_grad():
                expected.append(model.forward_features(video[None])[0].numpy())
    np.testing.assert_allclose(feats, np.stack(expected), rtol=1e-5, atol=1e-6)
    extract_features(_cfg(path, tmp_path / "default", videos=str(tmp_path / "v")))
    assert not np.allclose(np.load(tmp_path / "default" / "a.npy"), feats, atol=1e-3)
    with pytest.raises(ConfigError, match="fp32"):
        _cfg(path, tmp_path / "x", videos=str(tmp_path / "v"), reference_features=True, amp="bf16")
