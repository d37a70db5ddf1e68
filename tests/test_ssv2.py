import json

import pandas as pd
import pytest
from click.testing import CliRunner
from videos import index_frames, write_video

from vmae.cli.data import data
from vmae.curation.ssv2 import read_labels, split_from_name, ssv2_manifest, template_name
from vmae.manifests import ManifestError, read_manifest

TEMPLATES = ["Approaching something with your camera", "Holding something next to something",
             "Pushing something from left to right"]


def entry(vid, template):
    return {"id": str(vid), "label": template.lower(), "template": template.replace("something", "[something]"),
            "placeholders": ["a cup"]}


@pytest.fixture
def ssv2(tmp_path):
    labels = tmp_path / "something-something-v2-labels.json"
    labels.write_text(json.dumps({t: str(i) for i, t in enumerate(TEMPLATES)}))
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in (1, 2, 3, 5):
        (videos / f"{vid}.webm").write_bytes(b"not probed")
    entries = [entry(1, TEMPLATES[1]), entry(2, TEMPLATES[0]), entry(3, TEMPLATES[2]),
               entry(4, TEMPLATES[1]),                                   # no video file
               entry(5, "Spinning something so it continues spinning"),  # not in the label file
               entry(1, TEMPLATES[2]),                                   # duplicate id
               {"label": "no id"}, ["not", "an", "object"]]
    ann = tmp_path / "something-something-v2-train.json"
    ann.write_text(json.dumps(entries))
    return ann, labels, videos


def test_template_name():
    assert template_name("Holding [something] next to [something]") == "Holding something next to something"


@pytest.mark.parametrize("name, split", [("something-something-v2-train.json", "train"),
                                         ("something-something-v2-validation.json", "val"),
                                         ("something-something-v2-test.json", "test"), ("val.json", "val"),
                                         ("annotations.json", None), ("train_val.json", None)])
def test_split_from_name(name, split):
    assert split_from_name(name) == split


def test_manifest(ssv2, tmp_path):
    ann, labels, videos = ssv2
    report = ssv2_manifest(ann, labels, videos, tmp_path / "ssv2.parquet")
    df = read_manifest(tmp_path / "ssv2.parquet")
    assert df["key"].tolist() == ["ssv2_1", "ssv2_2", "ssv2_3", "ssv2_4"]
    assert df["label"].tolist() == [TEMPLATES[1], TEMPLATES[0], TEMPLATES[2], TEMPLATES[1]]
    assert df["label_id"].tolist() == [1, 0, 2, 1]
    assert set(df["split"]) == {"train"} and set(df["stride"]) == {2} and set(df["source"]) == {"ssv2"}
    assert df["path"].tolist() == [str(videos / f"{i}.webm") for i in (1, 2, 3, 4)]
    assert df["status"].tolist() == [None, None, None, "missing-file"]
    assert "4.webm does not exist" in df["error"].iloc[3]
    assert (report.entries, report.rows, report.missing, report.classes_seen, report.classes) == (8, 4, 1, 3, 3)
    assert report.reasons == {"unknown template": 1, "duplicate id": 1, "no id": 1, "not an object": 1}
    rejects = pd.read_csv(tmp_path / "ssv2.rejects.csv")
    assert rejects["line"].tolist() == [4, 5, 6, 7]
    assert "Spinning [something]" in rejects["reason"].iloc[0]
    assert rejects["reason"].iloc[1] == "duplicate id '1' (first at entry 0)"
    assert any("missing-file" in line for line in report.lines())



def test_paths_are_absolute_from_a_relative_folder(ssv2, tmp_path, monkeypatch):
    ann, labels, videos = ssv2
    monkeypatch.chdir(tmp_path)
    ssv2_manifest(ann, labels, "videos", tmp_path / "ssv2.parquet")
    assert read_manifest(tmp_path / "ssv2.parquet")["path"].iloc[0] == str(videos.resolve() / "1.webm")

def test_test_split_without_templates(ssv2, tmp_path):
    _, labels, videos = ssv2
    ann = tmp_path / "something-something-v2-test.json"
    ann.write_text(json.dumps([{"id": "1"}, {"id": "2"}]))
    report = ssv2_manifest(ann, labels, videos, tmp_path / "test.parquet")
    df = read_manifest(tmp_path / "test.parquet")
    assert df["split"].tolist() == ["test", "test"] and df["label"].isna().all() and report.unlabeled == 2
    assert not (tmp_path / "test.rejects.csv").exists()


def test_split_must_be_known(ssv2, tmp_path):
    _, labels, videos = ssv2
    ann = tmp_path / "annotations.json"
    ann.write_text("[]")
    with pytest.raises(ManifestError, match="pass --split"):
        ssv2_manifest(ann, labels, videos, tmp_path / "o.parquet")
    assert ssv2_manifest(ann, labels, videos, tmp_path / "o.parquet", split="val").rows == 0


def test_bad_label_files(tmp_path):
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"a": "0", "b": "2"}))
    with pytest.raises(ManifestError, match="ids must be 0..1"):
        read_labels(bad)
    bad.write_text(json.dumps({"a": "zero"}))
    with pytest.raises(ManifestError, match="not an integer"):
        read_labels(bad)
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_labels(bad)


def test_probe(ssv2, tmp_path):
    ann, labels, videos = ssv2
    write_video(videos / "2.webm", index_frames(6, (32, 32)), fps=12, codec="libvpx-vp9",
                extra=("-deadline", "realtime", "-cpu-used", "8"))
    report = ssv2_manifest(ann, labels, videos, tmp_path / "p.parquet", probe=True)
    df = read_manifest(tmp_path / "p.parquet").set_index("video_id")
    assert df.loc["2", "status"] == "ok" and df.loc["2", "frames"] == 6 and df.loc["2", "width"] == 32
    assert df.loc["2", "codec"] == "vp9"
    # A text file named .webm: ffmpeg's answer decides between not-a-video and decode-error (media.py).
    assert df.loc["1", "status"] in ("not-a-video", "decode-error") and "1.webm" in df.loc["1", "error"]
    assert df.loc["4", "status"] == "missing-file" and df.loc["4", "frames"] is pd.NA
    assert sum(report.probed.values()) == 4 and report.probed["ok"] == 1 and report.probed["missing-file"] == 1


def test_cli(ssv2, tmp_path):
    ann, labels, videos = ssv2
    runner = CliRunner()
    args = ["ssv2", "--annotations", str(ann), "--labels", str(labels), "--videos", str(videos)]
    result = runner.invoke(data, args + ["--out", str(tmp_path / "s.parquet")])
    assert result.exit_code == 0, result.output
    assert "ssv2 train: 8 annotations -> 4 rows" in result.output
    result = runner.invoke(data, ["ssv2", "--annotations", str(ann), "--labels", str(ann), "--videos",
                                  str(videos), "--out", str(tmp_path / "s.parquet")])
    assert result.exit_code == 1 and "labels.json as released" in result.output
