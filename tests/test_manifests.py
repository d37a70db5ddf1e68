"""The manifest spine: schema, Parquet round trip, CSV/TSV/JSONL import, validation, label files."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vmae.atomic import TEMP_SUFFIX, atomic_path
from vmae.manifests import (COLUMNS, KEY_PATTERN, SCHEMA, ManifestError, conform, empty_manifest, make_key,
                            read_manifest, read_table, validate, write_manifest)
from vmae.manifests import io as manifest_io
from vmae.manifests import labels

SHARED_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "labels"
# sha256 of the official files (videomaev2-reference.md section 7.1).
LABEL_SHA256 = {
    "k710_identical_label_merge.json": "43b41cc55553ded09f5b689dd59693b3aa0c95de9900fe425e39a4300c1ee58e",
    "label_710to400.json": "af6a6b739cfeb2c52006edbf63a21fa22b31f762e7728eca18f8e4308913a87b",
    "label_710to600.json": "a24c5de2f4a0711a13dfbb8c8b3ee1b172f650a965de070219bf432907b0c931",
    "label_710to700.json": "ad39b6cdcb065bc1c5f9cb9ade4332e79cd58ea8f7bfce17b9b204d4f95b00b3",
    "label_map_k400.txt": "0950338b5e1e980c3576ffd695c2a42de7be3ed47686efe29a8c86b0f23d4b35",
    "label_map_k600.txt": "12a96bcde5987252dd07172317de5b51e65d144fbde7b8f0489590eddc9ec2b1",
    "label_map_k700.txt": "04f82be085f42a98582530bf74a5fc47deb42c2f522855acd8af2012f2a48ae8",
    "label_map_k710.txt": "21252255bdf4e69af20eecf81fc4a8fd7feb34e0388b0edcc0fbe8d5d333af1f",
}


def sample():
    """Two rows with a value or a null in every column."""
    return pd.DataFrame({
        "key": ["abc_000001_000011", "v2"], "source": ["k400", "ssv2"], "video_id": ["abc", None],
        "url": [None, "https://example.org/v2.webm"], "path": ["clips/abc.mp4", None],
        "start_sec": [1.0, None], "end_sec": [11.0, None], "start_frame": [None, 30], "num_frames": [None, 300],
        "label": ["abseiling", None], "label_id": [341, None], "split": ["train", "val"], "stride": [4, 2],
        "fps": [29.97, None], "frames": [300, None], "width": [340, None], "height": [256, None],
        "duration": [10.0, None], "codec": ["h264", None], "status": ["ok", None], "error": [None, None],
    })


# ------------------------------------------------------------------------------------------------ schema

def test_schema_has_the_manifest_columns_in_order():
    core = ["key", "source", "video_id", "url", "path", "start_sec", "end_sec", "label", "label_id", "split",
            "stride"]
    assert [c for c in COLUMNS if c in core] == core
    assert COLUMNS == SCHEMA.names and len(set(COLUMNS)) == len(COLUMNS)
    assert all(f.nullable for f in SCHEMA)
    types = {f.name: f.type for f in SCHEMA}
    assert types["key"] == pa.string() and types["video_id"] == pa.string() and types["label"] == pa.string()
    assert types["start_sec"] == pa.float64() and types["end_sec"] == pa.float64()
    assert types["label_id"] == pa.int64() and types["stride"] == pa.int64()


def test_conform_orders_columns_and_sets_dtypes():
    df = conform(pd.DataFrame({"stride": [4], "key": ["a"], "label_id": [3.0]}))
    assert list(df.columns) == COLUMNS
    assert str(df["stride"].dtype) == "Int64" and df["label_id"].tolist() == [3]
    assert df["video_id"].tolist() == [None] and df["start_sec"].isna().all()
    assert len(empty_manifest(3)) == 3 and empty_manifest(3)["key"].tolist() == [None] * 3
    with pytest.raises(ManifestError, match=r"unknown manifest column\(s\) \['colour'\]"):
        conform(pd.DataFrame({"key": ["a"], "colour": ["red"]}))
    with pytest.raises(ManifestError, match="column 'label_id' does not fit"):
        conform(pd.DataFrame({"key": ["a"], "label_id": [4.5]}))


@pytest.mark.parametrize("parts, key", [
    (("abc", "000001", "000011"), "abc_000001_000011"),
    (("a.b c/d",), "a_b_c_d"),          # a dot would split a WebDataset member name
    (("-abc", 1), "_-abc_1"),           # no leading '-' (an option to most tools)
    (("k400", None, "", "x"), "k400_x"),
    (("ümlaut",), "_mlaut"),
])
def test_make_key(parts, key):
    assert make_key(*parts) == key
    assert KEY_PATTERN.match(key)


# ---------------------------------------------------------------------------------------------- parquet

def test_parquet_round_trip_keeps_dtypes_and_nulls(tmp_path):
    df = conform(sample())
    write_manifest(df, tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert back.dtypes.to_dict() == df.dtypes.to_dict()
    assert back.equals(df)
    assert back.loc[1, "video_id"] is None and back.loc[0, "error"] is None
    assert pd.isna(back.loc[1, "start_sec"]) and back.loc[1, "label_id"] is pd.NA
    assert back.loc[1, "start_frame"] == 30 and back.loc[0, "fps"] == 29.97
    assert pq.read_schema(tmp_path / "m.parquet").remove_metadata().equals(SCHEMA)


def test_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "m.parquet"
    write_manifest(sample(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]
    before = target.read_bytes()

    def broken(table, where, **kwargs):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(manifest_io.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(sample(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"] and target.read_bytes() == before


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_atomic_path_names_differ_for_writers_with_one_pid(tmp_path):
    """Two writers of one file (slices on two nodes can share a pid) never share a temporary name."""
    target = tmp_path / "index.parquet"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        for tmp in (first, second):
            assert re.fullmatch(r"\.index\.parquet" + TEMP_SUFFIX, tmp.name), tmp.name
            tmp.write_text(tmp.name)
    assert target.read_text() == first.name


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="file not found"):
        read_manifest(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"video_id": ["a"]}), tmp_path / "nokey.parquet")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['key', 'source'\]"):
        read_manifest(tmp_path / "nokey.parquet")


# ------------------------------------------------------------------------------------------------ import

def test_csv_import_reports_bad_rows_with_file_line_and_reason(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("key,source,start_sec,label_id\n"
                    "k1,k400,1.5,2\n"
                    "\n"                       # a blank line must not shift the line numbers
                    "k2,k400,abc,3\n"
                    "k3,,2,4.5\n"
                    "k4,k400,,\n")
    good, rejects = read_table(path)
    assert good["key"].tolist() == ["k1", "k4"]
    assert good["start_sec"].tolist()[0] == 1.5 and pd.isna(good["start_sec"].tolist()[1])
    assert good["label_id"][0] == 2 and good["label_id"].isna().tolist() == [False, True]
    assert rejects.to_dict("records") == [
        {"file": str(path), "line": 4, "key": "k2", "reason": "column 'start_sec': 'abc' is not a number"},
        {"file": str(path), "line": 5, "key": "k3", "reason": "column 'label_id': '4.5' is not a number"},
    ]
    with pytest.raises(ManifestError, match=r"m.csv, line 4: 2 bad row\(s\); first: column 'start_sec'"):
        read_manifest(path)


def test_csv_row_of_empty_fields_is_kept_for_validation(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("key,source\nk1,a\n\n,\nk2,b\n")
    good, rejects = read_table(path)
    assert good["key"].tolist() == ["k1", None, "k2"] and len(rejects) == 0
    _, invalid = validate(good, path)
    assert invalid["reason"].tolist() == ["empty key; empty source"]


def test_tsv_import(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("key\tsource\tlabel\nk1\tk400\triding a bike\n")
    good, rejects = read_table(path)
    assert good.loc[0, "label"] == "riding a bike" and len(rejects) == 0


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"key,source\nk1,caf\xe9\n", "not UTF-8"),
    (b"key,colour\nk1,red\n", r"unknown column\(s\) \['colour'\]"),
])
def test_csv_import_errors(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=message):
        read_table(path)


def test_jsonl_import(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"key": "k1", "source": "webvid", "video_id": 123, "stride": 4}\n'
                    "\n"
                    '{"key": "k2", "source": "webvid", "start_sec": "later"}\n'
                    '{"key": "k3", "source": "webvid", "label": null}\n')
    good, rejects = read_table(path)
    assert good["key"].tolist() == ["k1", "k3"]
    assert good.loc[0, "video_id"] == "123" and good.loc[0, "stride"] == 4  # a JSON number in a text column
    assert rejects.to_dict("records") == [{"file": str(path), "line": 3, "key": "k2",
                                           "reason": "column 'start_sec': 'later' is not a number"}]
    write_manifest(good, tmp_path / "m.parquet")
    assert read_manifest(tmp_path / "m.parquet")["video_id"].tolist() == ["123", None]


@pytest.mark.parametrize("content, message", [
    ('{"key": "k1"}\n{"key": \n', "m.jsonl, line 2: invalid JSON"),
    ('{"key": "k1"}\n["k2"]\n', "m.jsonl, line 2: expected one JSON object per line"),
])
def test_jsonl_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    with pytest.raises(ManifestError) as e:
        read_table(path)
    assert str(e.value).startswith(str(tmp_path / message))


# -------------------------------------------------------------------------------------------- validation

def test_validation_rules():
    df = conform(pd.DataFrame({
        "key": ["ok", "", "a.b", "-x", "nosrc", "neg", "rev", "st", "lab", "ok", "fine"],
        "source": ["s", "s", "s", "s", None, "s", "s", "s", "s", "s", "s"],
        "start_sec": [0, None, None, None, None, -1, 5, None, None, None, 1],
        "end_sec": [10, None, None, None, None, 3, 5, None, None, None, 2],
        "stride": [4, None, None, None, None, None, None, 0, None, None, 2],
        "label_id": [1, None, None, None, None, None, None, None, -3, None, 0],
    }))
    good, rejects = validate(df, "m.csv", first_line=2)
    assert good["key"].tolist() == ["ok", "fine"]
    reasons = dict(zip(rejects["line"], rejects["reason"]))
    assert list(rejects.columns) == ["file", "line", "key", "reason"] and set(rejects["file"]) == {"m.csv"}
    assert reasons == {
        3: "empty key",
        4: "key 'a.b' has characters other than letters, digits, '_' and '-'",
        5: "key '-x' has characters other than letters, digits, '_' and '-'",
        6: "empty source",
        7: "start_sec -1.0 is negative",
        8: "end_sec 5.0 is not after start_sec 5.0",
        9: "stride 0 is below 1",
        10: "label_id -3 is negative",
        11: "duplicate key 'ok'",
    }


def test_validation_joins_several_problems():
    df = conform(pd.DataFrame({"key": ["a b"], "source": [None], "start_sec": [-2.0]}))
    _, rejects = validate(df)
    assert rejects.loc[0, "reason"] == ("key 'a b' has characters other than letters, digits, '_' and '-'; "
                                        "empty source; start_sec -2.0 is negative")
    assert rejects.loc[0, "line"] == 0 and rejects.loc[0, "file"] is None


def test_manifest_error_names_file_line_and_row():
    assert str(ManifestError("bad", "f.csv", line=3)) == "f.csv, line 3: bad"
    assert str(ManifestError("bad", "f.csv", row=7)) == "f.csv, row 7: bad"
    assert str(ManifestError("bad", row=7)) == "row 7: bad"
    assert str(ManifestError("bad")) == "bad"


# ---------------------------------------------------------------------------------------------- labels

def test_packaged_label_files_are_the_official_bytes():
    for name, digest in LABEL_SHA256.items():
        data = labels.data_file(name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert b"\r" not in data and not data.endswith(b"\n")
        if SHARED_LABELS.is_dir():
            assert data == (SHARED_LABELS / name).read_bytes(), name


@pytest.mark.parametrize("version, count, first", [
    ("k400", 400, ["abseiling", "air drumming", "answering questions", "applauding", "applying cream"]),
    ("k600", 600, ["feeding fish", "cosplaying", "playing laser tag"]),
    ("k700", 700, ["counting money", "pouring wine", "using a power drill"]),
    ("k710", 710, ["riding a bike", "marching", "dodgeball", "playing cymbals", "checking tires"]),
])
def test_class_names_and_ids(version, count, first):
    names = labels.class_names(version)
    lines = labels.data_file(f"label_map_{version}.txt").read_text(encoding="utf-8").split("\n")
    assert len(names) == count == len(set(names)) and list(names) == lines
    assert list(names[:len(first)]) == first
    ids = labels.class_ids(version)
    assert all(ids[name] == line for line, name in enumerate(lines))  # id = 0-based line number


def test_k400_quirks_from_the_reference():
    k400 = labels.class_names("k400")
    assert (k400[-2], k400[-1]) == ("yoga", "zumba")
    assert (k400[100], k400[158], k400[203]) == ("sipping cup", "hugging baby", "opening wine bottle")
    k710 = labels.class_names("k710")
    assert (k710[708], k710[709], k710[348]) == ("archaeological excavation", "bull fighting", "throwing ball")
    assert set(k710[:400]) == set(k400)


@pytest.mark.parametrize("n", [400, 600, 700])
def test_head_maps(n):
    mapping = labels.head_map(n)
    k710, small = labels.class_names("k710"), labels.class_names(f"k{n}")
    assert len(mapping) == n and len(set(mapping)) == n
    assert all(k710[mapping[i]] == small[i] for i in range(n))


def test_head_map_values_from_the_reference():
    m400 = labels.head_map(400)
    assert m400[:3] == (341, 158, 189) and m400[-2:] == (370, 331)
    assert labels.head_map(600)[:3] == (121, 562, 518) and labels.head_map(700)[:3] == (363, 481, 594)
    assert set(range(710)) - set(labels.head_map(700)) == {95, 111, 139, 161, 227, 293, 316, 380, 708, 709}
    with pytest.raises(ValueError, match="choose 400, 600 or 700"):
        labels.head_map(710)
    with pytest.raises(ValueError, match="unknown label map"):
        labels.class_names("k800")


def test_rename_table():
    table = labels.rename_table()
    assert len(table) == 15
    assert table["drinking"] == "sipping cup" and table["dying hair"] == "dyeing hair"
    assert table["passing american football (not in game)"] == "passing American football (not in game)"
    assert table == json.loads(labels.data_file("k710_identical_label_merge.json").read_text())
    k710 = labels.class_ids("k710")
    assert all(new in k710 for new in table.values())
    assert [old for old in table if old in k710] == ["throwing ball"]  # the one key that is also a class


def test_label_accessors_return_immutable_values():
    assert isinstance(labels.class_names("k710"), tuple) and isinstance(labels.head_map(400), tuple)
    assert np.array(labels.head_map(400)).dtype.kind == "i"
