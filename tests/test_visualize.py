"""vmae-train visualize: patch layout round trip, de-normalisation with each patch's own statistics, the PNG."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from pretrain_data import TINY, make_shards

from vmae.cli.train import train
from vmae.training.config import pretrain_config
from vmae.training.losses import patchify, pretrain_targets
from vmae.training.masking import tube_mask
from vmae.training.pretrain import pretrain
from vmae.training.transforms import denormalize, normalize
from vmae.training.visualize import reconstruct, unpatchify, visualize


def test_unpatchify_inverts_patchify():
    video = torch.rand(2, 3, 4, 32, 48)
    tokens = patchify(video, 16, 2)
    assert torch.equal(unpatchify(tokens, (2, 2, 3), 16, 2), video)


def test_perfect_prediction_reconstructs_the_input_pixels():
    video = normalize(torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8))
    mask = tube_mask(2, (2, 2, 2), 0.75, torch.Generator().manual_seed(0), "cpu")
    targets = pretrain_targets(video, 16, 2, normalize=True)  # what a perfect model would output
    pred = targets[mask].reshape(2, -1, targets.shape[-1])
    recon = reconstruct(pred, video, mask, 16, 2, normalized_target=True)
    expected = patchify(denormalize(video), 16, 2)
    assert torch.allclose(recon, expected, atol=1e-4)
    wrong = reconstruct(torch.zeros_like(pred), video, mask, 16, 2, normalized_target=True)
    assert not torch.allclose(wrong[mask], expected[mask], atol=1e-2)  # hidden patches come from pred
    assert torch.equal(wrong[~mask], expected[~mask].clamp(0, 1))  # visible ones from the input


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    shards = make_shards(root, videos=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: tiny steps crawl with more threads than cores
    report = pretrain(pretrain_config(**dict(TINY, shards=shards, output_dir=str(root / "run"), epochs=1,
                                             warmup_epochs=0)))
    torch.set_num_threads(threads)
    return shards, report["checkpoint"]


def test_visualize_writes_a_grid_png(trained, tmp_path):
    shards, ckpt = trained
    out = visualize(ckpt, shards, tmp_path / "recon.png", num=3)
    image = Image.open(out)
    # 4 rows (input, visible, reconstruction, target) per clip, one column per tubelet (4 frames / 2)
    assert image.format == "PNG" and image.size == (240, 1440)
    assert np.asarray(image.convert("L")).std() > 10  # not a blank canvas


def test_visualize_command(trained, tmp_path):
    shards, ckpt = trained
    result = CliRunner().invoke(train, ["visualize", "--checkpoint", ckpt, "--shards", shards,
                                        "--out", str(tmp_path / "r.png"), "--num", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").stat().st_size > 0 and "wrote" in result.output
