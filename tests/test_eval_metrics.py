"""Evaluation arithmetic: view averaging, top-k, mean per-class accuracy, merging, K710 head conversion."""
import argparse
import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vmae.manifests import labels
from vmae.training.evaluate import (confusion_matrix, load_classifier, mean_class_accuracy, merge_results,
                                    plot_confusion, recorded_model_name, score, video_records,
                                    view_probabilities, write_predictions)
from vmae.training.models import create_model

# sha256 of the official misc/label_710to400.json (videomaev2-reference.md section 7.1)
LABEL_710TO400_SHA256 = "af6a6b739cfeb2c52006edbf63a21fa22b31f762e7728eca18f8e4308913a87b"


def test_views_are_averaged_as_probabilities_not_logits():
    # One very confident view for class 0 against two fairly sure views for class 1: probabilities
    # saturate at 1, logits do not, so the two merges disagree.
    logits = torch.tensor([[[20.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 8.0, 0.0]]])
    probs = view_probabilities(logits)
    torch.testing.assert_close(probs[0], torch.softmax(logits[0], dim=-1).mean(0))
    assert probs.shape == (1, 3) and float(probs.sum()) == pytest.approx(1.0)
    assert int(probs.argmax()) == 1
    assert int(logits.mean(1).argmax()) == 0


def test_records_top5_ties_and_scores():
    probs = torch.tensor([[0.1, 0.3, 0.3, 0.05, 0.05, 0.2],    # tie 1/2: lower id first
                          [0.6, 0.1, 0.1, 0.1, 0.05, 0.05],
                          [0.0, 0.0, 0.0, 0.1, 0.2, 0.7]])
    records = video_records(["a", "b", "c"], [2, 0, 2], probs)
    assert [r["pred"] for r in records] == [1, 0, 5]
    assert records[0]["top5"] == [1, 2, 5, 0, 3]
    assert records[2]["top5"] == [5, 4, 3, 0, 1]
    assert records[0]["top5_prob"] == pytest.approx([0.3, 0.3, 0.2, 0.1, 0.05])
    s = score(records, num_classes=6)
    assert s["top1"] == pytest.approx(100 / 3)
    assert s["top5"] == pytest.approx(200 / 3)  # c: class 2 ties 0 and 1 at zero and sorts after them
    assert s["videos"] == 3


def test_top5_counts_label_anywhere_in_the_five():
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.08, 0.07, 0.05],
                          [0.5, 0.2, 0.1, 0.08, 0.07, 0.05]])
    records = video_records(["a", "b"], [4, 5], probs)
    s = score(records, 6)
    assert s["top1"] == 0.0
    assert s["top5"] == 50.0


def test_mean_class_accuracy_weights_classes_equally():
    true = np.array([0, 0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 2, 2, 0])
    # class recalls: 4/4, 0/1, 1/2; class 3 absent -> ignored
    assert mean_class_accuracy(true, pred, 4) == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    cm = confusion_matrix(true, pred, 4)
    assert cm[0, 0] == 4 and cm[1, 2] == 1 and cm[2, 0] == 1 and cm.sum() == 7


def _records(keys):
    rng = np.random.default_rng(0)
    probs = torch.tensor(rng.dirichlet(np.ones(7), size=len(keys)), dtype=torch.float32)
    return video_records(keys, [int(k[1:]) % 7 for k in keys], probs)


def test_merge_is_identical_for_any_split():
    keys = [f"v{i:03d}" for i in range(11)]
    single = _records(keys)
    merged1, rep1 = merge_results([single])
    # 11 videos over 3 "ranks", unevenly and out of order; rank 2 gets nothing
    parts = [[single[i] for i in (5, 0, 9, 3)], [single[i] for i in (10, 1, 2, 4, 6, 7, 8)], []]
    merged3, rep3 = merge_results(parts)
    assert [r["key"] for r in merged3] == sorted(keys)
    assert merged1 == merged3 and rep1 == rep3 == []
    assert score(merged1, 7) == score(merged3, 7)


def test_merge_reports_repeated_keys_once_and_keeps_one_record():
    single = _records(["v001", "v002", "v003"])
    merged, repeated = merge_results([single[:2], single[1:], single[1:2]])
    assert [r["key"] for r in merged] == ["v001", "v002", "v003"]
    assert repeated == ["v002"]


def test_packaged_map_is_the_official_file():
    raw = labels.data_file("label_710to400.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == LABEL_710TO400_SHA256


def _k710_checkpoint(path):
    """A vit_test checkpoint whose 710 head rows carry their own row id, saved like an official file."""
    model = create_model("vit_test", num_classes=710, num_frames=4, img_size=32)
    with torch.no_grad():
        model.head.bias.copy_(torch.arange(710))
        model.head.weight.copy_(torch.arange(710)[:, None].expand(-1, model.embed_dim))
    torch.save({"module": model.state_dict(), "args": argparse.Namespace(nb_classes=710)}, path)
    return model


@pytest.mark.parametrize("label_map,n", [("k710-to-k400", 400), ("k710-to-k600", 600), ("k710-to-k700", 700)])
def test_k710_head_conversion_reproduces_the_json_map(tmp_path, label_map, n):
    source = _k710_checkpoint(tmp_path / "k710.pth")
    model, classes, note = load_classifier("vit_test", tmp_path / "k710.pth", label_map=label_map,
                                           num_frames=4, img_size=32)
    official = json.loads(labels.data_file(f"label_710to{n}.json").read_text())
    assert classes == n and model.num_classes == n
    assert model.head.bias.long().tolist() == official
    assert model.head.weight[:, 3].long().tolist() == official
    torch.testing.assert_close(model.fc_norm.weight, source.fc_norm.weight)
    assert f"710 -> {n}" in note
    # the gathered rows name the same class in both label maps
    k710, kn = labels.class_names("k710"), labels.class_names(f"k{n}")
    assert all(k710[j] == kn[i] for i, j in enumerate(official))


def test_head_size_mismatches_are_refused(tmp_path):
    _k710_checkpoint(tmp_path / "k710.pth")
    with pytest.raises(ValueError, match="has 710 classes but 400"):
        load_classifier("vit_test", tmp_path / "k710.pth", num_classes=400, num_frames=4, img_size=32)
    model = create_model("vit_test", num_classes=174, num_frames=4, img_size=32)
    torch.save({"model": model.state_dict()}, tmp_path / "ssv2.pth")
    with pytest.raises(ValueError, match="converts a 710-class head"):
        load_classifier("vit_test", tmp_path / "ssv2.pth", label_map="k710-to-k400", num_frames=4, img_size=32)
    model, classes, _ = load_classifier("vit_test", tmp_path / "ssv2.pth", num_frames=4, img_size=32)
    assert classes == 174


def test_predictions_parquet_and_confusion_png(tmp_path):
    records = video_records(["b", "a"], [1, 0], torch.tensor([[0.2, 0.8], [0.6, 0.4]]), keep_probs=True)
    write_predictions(records, tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert table["key"] == ["b", "a"] and table["pred"] == [1, 0] and table["label"] == [1, 0]
    assert table["top5"] == [[1, 0], [0, 1]]
    assert table["probs"][0] == pytest.approx([0.2, 0.8])
    plot_confusion(confusion_matrix([1, 0], [1, 0], 2), tmp_path / "c.png", ["x", "y"], "t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_name_comes_from_the_checkpoint(tmp_path):
    assert recorded_model_name({"config": {"model": "vit_test"}}) == "vit_test"
    assert recorded_model_name({"args": argparse.Namespace(model="vit_giant_patch14_224")}) == "vit_giant_patch14_224"
    assert recorded_model_name({"config": {"model": "pretrain_videomae_base_patch16_224"}}) == "vit_base_patch16_224"
    assert recorded_model_name({"model": {}}) is None
    model = create_model("vit_test", num_classes=3, num_frames=4, img_size=32)
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="records no model name; pass --model"):
        load_classifier(None, tmp_path / "bare.pth", num_frames=4, img_size=32)
    torch.save({"model": model.state_dict(), "config": {"model": "vit_test"}}, tmp_path / "named.pth")
    assert load_classifier(None, tmp_path / "named.pth", num_frames=4, img_size=32)[1] == 3


def test_input_shape_given_then_recorded_then_the_reference_default():
    from vmae.training.evaluate import input_shape

    official = {"args": argparse.Namespace(model="vit_giant_patch14_224", num_frames=64, input_size=266, tubelet_size=2)}
    weights = {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 14, 14)}
    shape, note = input_shape({"num_frames": None, "img_size": None, "tubelet_size": None}, official, weights)
    assert shape == {"num_frames": 64, "img_size": 266, "tubelet_size": 4}  # the weights know the tubelet
    assert note == "num_frames 64 (checkpoint), img_size 266 (checkpoint), tubelet_size 4 (checkpoint)"
    shape, note = input_shape({"num_frames": 16, "img_size": None, "tubelet_size": None}, {"model": {}}, {})
    assert shape == {"num_frames": 16, "img_size": 224, "tubelet_size": 2}
    assert note == "num_frames 16 (given), img_size 224 (default), tubelet_size 2 (default)"
