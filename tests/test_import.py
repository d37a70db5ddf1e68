import pandas as pd
import pytest
from click.testing import CliRunner
from videos import make_index_video

from vmae.cli.data import data
from vmae.curation.importer import import_videos, probed_lines, unique_keys
from vmae.manifests.validate import excluded_lines
from vmae.manifests import KEY_PATTERN, ManifestError, read_manifest


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "UCF-101"
    for rel in ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi",
                "Biking/v_Biking_g01_c01.avi", "Biking/extra/v_Biking_g02_c01.mp4",
                "a b/x.mp4", "a_b/x.mp4", "top.mp4", "Biking/notes.txt", ".hidden/v.mp4"]:
        touch(root / rel)
    return root


def test_folder_tree(tree, tmp_path):
    out = tmp_path / "ucf.parquet"
    report = import_videos(tree, "ucf101", out, split="train")
    df = read_manifest(out)
    assert (tmp_path / "ucf.classes.txt").read_text() == "ApplyEyeMakeup\nBiking\na b\na_b\n"
    assert df["video_id"].tolist() == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                                       "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi",
                                       "Biking/extra/v_Biking_g02_c01.mp4", "Biking/v_Biking_g01_c01.avi",
                                       "a b/x.mp4", "a_b/x.mp4"]
    assert df["label"].tolist() == ["ApplyEyeMakeup", "ApplyEyeMakeup", "Biking", "Biking", "a b", "a_b"]
    assert df["label_id"].tolist() == [0, 0, 1, 1, 2, 3]
    assert df["key"].iloc[0] == "ucf101_ApplyEyeMakeup_v_ApplyEyeMakeup_g01_c01"
    assert df["key"].is_unique and all(KEY_PATTERN.match(k) for k in df["key"])
    # "a b/x" and "a_b/x" make the same key: both get their path's hash, whatever the listing order.
    assert df["key"].iloc[4].startswith("ucf101_a_b_x_") and df["key"].iloc[5].startswith("ucf101_a_b_x_")
    assert report.collisions == (("ucf101_a_b_x", ["a b/x.mp4", "a_b/x.mp4"]),)
    assert set(df["stride"]) == {4} and set(df["split"]) == {"train"} and df["status"].isna().all()
    assert df["path"].iloc[0] == str(tree / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    assert report.ignored_files == 1 and report.rows == 6 and report.classes == 4
    rejects = pd.read_csv(tmp_path / "ucf.rejects.csv")
    assert rejects["key"].tolist() == ["top.mp4"] and "class folder" in rejects["reason"].iloc[0]


def test_unique_keys_order_independent():
    rels = ["a b/x.mp4", "a_b/x.mp4", "c/y.mp4", "c/y.avi"]
    keys, collisions = unique_keys("s", rels)
    keys_rev, _ = unique_keys("s", rels[::-1])
    assert dict(zip(rels, keys)) == dict(zip(rels[::-1], keys_rev))
    assert len(set(keys)) == 4 and len(collisions) == 2 and dict(zip(rels, keys))["c/y.mp4"] != "s_c_y"


def test_folder_without_labels(tree, tmp_path):
    report = import_videos(tree, "mine", tmp_path / "m.parquet", labels_from="none", stride=2)
    df = read_manifest(tmp_path / "m.parquet")
    assert len(df) == 7 and df["label"].isna().all() and set(df["stride"]) == {2}
    assert report.classes_file is None and not (tmp_path / "m.classes.txt").exists()


def test_csv_list(tmp_path):
    videos = tmp_path / "videos"
    touch(videos / "a.mp4")
    touch(videos / "b.mp4")
    touch(tmp_path / "elsewhere" / "c.mp4")
    lst = tmp_path / "list.csv"
    lst.write_text("path,label\n"
                   "videos/a.mp4,jump\n"              # line 2
                   "videos/b.mp4,run\n"               # 3
                   "videos/gone.mp4,run\n"            # 4: missing file, kept
                   "videos/a.mp4,walk\n"              # 5: listed twice
                   "videos/d.mp4\n"                   # 6: wrong field count
                   ",run\n"                           # 7: empty path
                   "videos/e.mp4,\n"                  # 8: empty label
                   f"{tmp_path / 'elsewhere' / 'c.mp4'},jump\n"
                   "https://example.org/v/f.mp4,run\n")
    report = import_videos(lst, "mine", tmp_path / "m.parquet", split="val")
    df = read_manifest(tmp_path / "m.parquet")
    assert report.labels_from == "csv"
    assert df["video_id"].tolist() == ["videos/a.mp4", "videos/b.mp4", "videos/gone.mp4", "elsewhere/c.mp4",
                                       "example.org/v/f.mp4"]
    assert df["label_id"].tolist() == [0, 1, 1, 0, 1]
    assert df["status"].tolist() == [None, None, "missing-file", None, None]
    assert df["url"].iloc[4] == "https://example.org/v/f.mp4" and df["path"].iloc[4] is None
    assert df["path"].iloc[0] == str(videos / "a.mp4") and report.missing == 1
    rejects = pd.read_csv(tmp_path / "m.rejects.csv")
    assert rejects["line"].tolist() == [5, 6, 7, 8]
    assert rejects["reason"].tolist()[0] == "listed twice (first at line 2)"
    assert "found 1" in rejects["reason"].iloc[1] and rejects["reason"].iloc[2] == "empty path"
    assert rejects["reason"].iloc[3] == "empty label"


def test_tsv_without_header_and_fixed_class_list(tmp_path):
    touch(tmp_path / "x" / "1.mp4")
    touch(tmp_path / "x" / "2.mp4")
    lst = tmp_path / "test.tsv"
    lst.write_text("x/1.mp4\tswim\nx/2.mp4\tfly\n")
    classes = tmp_path / "train.classes.txt"
    classes.write_text("run\nswim\n")
    import_videos(lst, "mine", tmp_path / "t.parquet", class_list=classes)
    df = read_manifest(tmp_path / "t.parquet")
    assert df["label"].tolist() == ["swim"] and df["label_id"].tolist() == [1]
    assert (tmp_path / "t.classes.txt").read_text() == "run\nswim\n"
    assert "'fly' is not in" in pd.read_csv(tmp_path / "t.rejects.csv")["reason"].iloc[0]


def test_an_official_label_map_by_name_gives_that_versions_ids(tmp_path):
    from vmae.manifests.labels import class_ids
    lst = tmp_path / "k400.csv"
    lst.write_text("a.mp4,zumba\nb.mp4,abseiling\nc.mp4,adjusting glasses\n")
    import_videos(lst, "k400", tmp_path / "k.parquet", class_list="k400")
    df = read_manifest(tmp_path / "k.parquet")
    ids = class_ids("k400")
    assert df["label_id"].tolist() == [ids["zumba"], ids["abseiling"]] == [399, 0]
    assert "'adjusting glasses' is not in k400" in pd.read_csv(tmp_path / "k.rejects.csv")["reason"].iloc[0]


def test_numeric_classes_sort_as_numbers(tmp_path):
    lst = tmp_path / "l.csv"
    lst.write_text("".join(f"v{i}.mp4,{c}\n" for i, c in enumerate(["10", "2", "1"])))
    import_videos(lst, "n", tmp_path / "n.parquet")
    assert (tmp_path / "n.classes.txt").read_text() == "1\n2\n10\n"
    assert read_manifest(tmp_path / "n.parquet")["label_id"].tolist() == [2, 1, 0]


def test_option_errors(tree, tmp_path):
    with pytest.raises(ManifestError, match="needs a CSV/TSV list"):
        import_videos(tree, "s", tmp_path / "o.parquet", labels_from="csv")
    with pytest.raises(ManifestError, match="letters, digits"):
        import_videos(tree, "my source", tmp_path / "o.parquet")
    lst = tmp_path / "l.csv"
    lst.write_text("a.mp4\n")
    with pytest.raises(ManifestError, match="no label column"):
        import_videos(lst, "s", tmp_path / "o.parquet", labels_from="csv")


def test_probe(tmp_path):
    make_index_video(tmp_path / "v" / "cls" / "good.mp4", 8, fps=8, size=(32, 32))
    touch(tmp_path / "v" / "cls" / "bad.mp4", b"<html>404 Not Found</html>\n")
    report = import_videos(tmp_path / "v", "p", tmp_path / "p.parquet", probe=True)
    df = read_manifest(tmp_path / "p.parquet").set_index("video_id")
    assert df.loc["cls/good.mp4", "status"] == "ok" and df.loc["cls/good.mp4", "frames"] == 8
    assert df.loc["cls/bad.mp4", "status"] == "not-a-video" and report.probed == {"ok": 1, "not-a-video": 1}


def test_cli(tree, tmp_path):
    runner = CliRunner()
    result = runner.invoke(data, ["import", str(tree), "--source", "ucf101", "--out", str(tmp_path / "u.parquet")])
    assert result.exit_code == 0, result.output
    assert "ucf101: 6 videos" in result.output and "key collision ucf101_a_b_x" in result.output
    result = runner.invoke(data, ["import", str(tree), "--source", "bad name", "--out", str(tmp_path / "u.parquet")])
    assert result.exit_code == 1 and "--source 'bad name'" in result.output


def test_report_lines_for_probe_and_exclusions():
    """The lines the import, ssv2 and sample reports share: probe counts by status, exclusions most frequent first."""
    assert probed_lines(None) == [] and probed_lines({}) == []
    assert probed_lines({"ok": 3, "corrupt": 1}) == ["  probe: corrupt 1, ok 3"]
    assert excluded_lines({"empty path": 1, "duplicate key": 4}) == ["  excluded 4: duplicate key",
                                                                      "  excluded 1: empty path"]
