"""vmae-data build-k710: the K400/K600/K700 merge, on small CSVs written in the official formats."""
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from disk import mounted_disk
from vmae.cli.data import data
from vmae.curation import kinetics
from vmae.curation.kinetics import DEDUP_RULE, OUTPUTS, BuildK710Config, build_k710, resolve_label
from vmae.errors import OutputError
from vmae.manifests import KEY_PATTERN, SCHEMA, ManifestError, make_key, read_manifest
from vmae.manifests import labels as label_maps

K710 = label_maps.class_ids("k710")
LABELED_HEADER = "label,youtube_id,time_start,time_end,split"
K400_HEADER = LABELED_HEADER + ",is_cc"
TEST_HEADER = "youtube_id,time_start,time_end,split"


def yid(name: str) -> str:
    """An 11-character YouTube-style ID."""
    return f"{name:x<11}"[:11]


def row(label, video, start, end, split, version):
    """One line as the official files write it: labels with spaces quoted, is_cc in K400 only."""
    text = f'"{label}"' if " " in label else label
    line = f"{text},{video},{start},{end},{split}"
    return line + ",0" if version == "k400" else line


def write(folder, name, header, lines, newline="\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(newline.join([header, *lines]) + newline, encoding="utf-8", newline="")
    return folder / name


def write_split(root, version, split, rows):
    header = K400_HEADER if version == "k400" else LABELED_HEADER
    return write(root / version, f"{split}.csv", header, [row(*r, split, version) for r in rows])


A, B, C, D, E, F, G = yid("aaa"), yid("bbb"), yid("ccc"), yid("ddd"), yid("eee"), yid("fff"), "-0123456789"
I, J, K, Z = yid("iii"), yid("jjj"), yid("kkk"), yid("zzz")


def full_inputs(root):
    """Every kind of duplicate and conflict once; see the expected counts in the tests below."""
    write_split(root, "k400", "train", [
        ("abseiling", A, 10, 20),          # also K600 train, same segment and label
        ("dying hair", B, 5, 15),          # K700 train has the new name 'dyeing hair'
        ("abseiling", C, 0, 10),           # K700 train has another segment
        ("air drumming", D, 1, 11),        # K700 train says 'zumba': a genuine conflict
        ("yoga", E, 1, 11),
        ("yoga", E, 50, 60),               # the same ID twice in one file
        ("Abseiling ", F, 2, 12),          # case and spacing
        ("zumba", G, 3, 13),               # a leading '-' in the ID
    ])
    write_split(root, "k400", "val", [("abseiling", A, 10, 20), ("yoga", I, 4, 14), ("yoga", J, 7, 17)])
    write(root / "k400", "test.csv", TEST_HEADER, [f"{A},1,11,test", f"{I},2,12,test", f"{Z},3,13,test"])
    write_split(root, "k600", "train", [("abseiling", A, 10, 20)])
    write_split(root, "k600", "val", [("yoga", J, 7, 17)])
    write(root / "k600", "test.csv", TEST_HEADER, [f"{K},1,11,test"])
    write_split(root, "k700", "train", [("dyeing hair", B, 5, 15), ("abseiling", C, 30, 40), ("zumba", D, 1, 11)])
    write_split(root, "k700", "val", [("riding a bike", K, 0, 10)])
    return root / "k400", root / "k600", root / "k700"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("k710")
    dirs = full_inputs(root / "in")
    report = build_k710(*dirs, root / "out")
    return root / "out", report


def test_one_row_per_youtube_id_and_the_survivors(full):
    out, report = full
    train, val = read_manifest(out / "train.parquet"), read_manifest(out / "val.parquet")
    # K400 rows first, then K600, then K700, each in file order.
    assert train["video_id"].tolist() == [E, F, G, A, B, C, D]
    assert train["source"].tolist() == ["k400"] * 3 + ["k600"] + ["k700"] * 3
    assert val["video_id"].tolist() == [I, J, K]
    assert val["source"].tolist() == ["k400", "k600", "k700"]
    both = pd.concat([train, val])
    assert both["video_id"].is_unique
    assert report["rows_out"] == {"train": 7, "val": 3}
    by_id = train.set_index("video_id")
    assert by_id.loc[E, ["start_sec", "end_sec"]].tolist() == [1.0, 11.0]  # first row of its file
    assert by_id.loc[C, ["start_sec", "end_sec"]].tolist() == [30.0, 40.0]  # the newest version's segment
    assert by_id.loc[D, "label"] == "zumba"                                 # the newest version's class
    assert by_id.loc[B, "label"] == "dyeing hair"
    assert by_id.loc[F, "label"] == "abseiling"


def test_duplicates_are_counted_by_origin_and_kind(full):
    dup = full[1]["duplicates"]
    assert dup["rows_removed"] == 7
    assert dup["by_origin"] == {"within_file": 1, "across_versions": 5, "val_in_train": 1}
    assert dup["by_kind"] == {"same_segment_same_label": 3, "same_segment_renamed_label": 1,
                              "different_segment": 2, "label_conflict": 1}
    assert dup["by_origin_and_kind"]["within_file"]["different_segment"] == 1
    assert dup["by_origin_and_kind"]["val_in_train"]["same_segment_same_label"] == 1
    assert dup["ids_repeated_within_a_file"]["k400 train"] == 1
    assert sum(dup["ids_repeated_within_a_file"].values()) == 1
    assert full[1]["val_in_train_removed"] == 1
    assert full[1]["label_conflicts"] == 1
    [example] = dup["label_conflict_examples"]
    assert example["video_id"] == D
    assert (example["kept"]["source"], example["kept"]["label"]) == ("k700", "zumba")
    assert (example["removed"]["source"], example["removed"]["label"]) == ("k400", "air drumming")


def test_val_video_in_any_train_split_leaves_val(full):
    val = read_manifest(full[0] / "val.parquet")
    assert A not in set(val["video_id"])  # K400 val, and in K600 train


def test_labels_renamed_and_respelled_are_reported(full):
    mapped = {m["label"]: m for m in full[1]["labels"]["mapped"]}
    assert mapped["dying hair"] == {"label": "dying hair", "k710": "dyeing hair", "how": "renamed", "rows": 1}
    assert mapped["Abseiling "]["how"] == "case_or_spacing"
    assert full[1]["labels"]["unknown"] == []


def test_test_leakage_is_reported_not_removed(full):
    out, report = full
    leak = report["test_leakage"]
    assert leak["rows"] == {"train": 1, "val": 2}
    assert leak["by_test_file"] == {"k400": {"train": 1, "val": 1}, "k600": {"train": 0, "val": 1}}
    assert sorted(leak["examples"]) == sorted([f"train {A}", f"val {I}", f"val {K}"])
    assert A in set(read_manifest(out / "train.parquet")["video_id"])


def test_manifest_columns_keys_and_label_ids(full):
    out, _ = full
    names = (out / "labels.txt").read_text(encoding="utf-8").split("\n")
    assert (out / "labels.txt").read_bytes() == label_maps.data_file("label_map_k710.txt").read_bytes()
    assert len(names) == 710
    for split in ("train", "val"):
        schema = pq.read_schema(out / f"{split}.parquet")
        # The manifest schema, the columns K710 always fills stored as required (non-null) ones.
        filled = {"key", "source", "video_id", "start_sec", "end_sec", "label", "label_id", "split", "stride"}
        assert schema.names == SCHEMA.names and schema.types == SCHEMA.types
        assert {f.name for f in schema if not f.nullable} == filled
        assert pa.unify_schemas([schema, SCHEMA]).remove_metadata().equals(SCHEMA)  # mixes with other manifests
        m = read_manifest(out / f"{split}.parquet")
        assert (m["split"] == split).all() and (m["stride"] == 4).all()
        assert m["url"].isna().all() and m["path"].isna().all()
        assert [names[i] for i in m["label_id"]] == m["label"].tolist()  # label_id = line of label in labels.txt
        assert m["key"].is_unique and all(KEY_PATTERN.match(k) for k in m["key"])
        assert m["key"].tolist() == [make_key(v, f"{int(s):06d}", f"{int(e):06d}")
                                     for v, s, e in zip(m["video_id"], m["start_sec"], m["end_sec"])]
    train = read_manifest(out / "train.parquet").set_index("video_id")
    assert train.loc[G, "key"] == "_-0123456789_000003_000013"


def test_official_list_format(full):
    out, _ = full
    for split in ("train", "val"):
        m = read_manifest(out / f"{split}.parquet")
        text = (out / f"{split}.csv").read_text(encoding="utf-8")
        assert text.endswith("\n") and "\r" not in text
        expected = [f"{v}_{int(s):06d}_{int(e):06d}.mp4 {i}"
                    for v, s, e, i in zip(m["video_id"], m["start_sec"], m["end_sec"], m["label_id"])]
        assert text.splitlines() == expected
        # As VideoMAE V2 reads it.
        listed = pd.read_csv(out / f"{split}.csv", header=None, delimiter=" ")
        assert listed.shape == (len(m), 2) and listed[1].tolist() == m["label_id"].tolist()
    assert f"-0123456789_000003_000013.mp4 {K710['zumba']}" in (out / "train.csv").read_text().splitlines()


def test_report_json_and_outputs(full):
    out, report = full
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert report["duplicates"]["rule"] == DEDUP_RULE
    assert report["classes_present"] == {"train": 4, "val": 2}  # yoga, abseiling, zumba, dyeing hair
    assert "abseiling" not in report["classes_absent"]["train"] and len(report["classes_absent"]["val"]) == 708
    assert report["inputs"]["k400"]["train"]["rows"] == 8 and report["inputs"]["k600"]["test"]["rows"] == 1
    assert report["skipped"] == ["k700 test: no test.csv in " + str(full[0].parent / "in" / "k700")]


def test_cli_prints_summary(tmp_path):
    dirs = full_inputs(tmp_path / "in")
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(dirs[0]), "--k600", str(dirs[1]),
                                       "--k700", str(dirs[2]), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "duplicates removed: 7" in result.output
    assert "val rows removed because the video is in train: 1" in result.output
    assert "label conflicts (kept the winning row's class): 1" in result.output
    assert "test leakage (kept, see report.json): train 1, val 2" in result.output
    assert "out  train 7 rows / 4 classes, val 3 rows / 2 classes" in result.output


def test_help_states_the_dedup_rule():
    result = CliRunner().invoke(data, ["build-k710", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert " ".join(DEDUP_RULE.split()) in text
    for option in ("--k400", "--k600", "--k700", "--out", "--label-aliases", "--on-unknown-label",
                   "--path-template"):
        assert option in text


# ------------------------------------------------------------------------------------------------ labels

def test_label_normalisation_rules():
    assert resolve_label("abseiling") == ("abseiling", "exact")
    # 'throwing ball' is a K710 class of its own (348): the exact name wins over the rename table.
    assert resolve_label("throwing ball") == ("throwing ball", "exact") and K710["throwing ball"] == 348
    for old, new in label_maps.rename_table().items():
        if old != "throwing ball":
            assert resolve_label(old) == (new, "renamed")
    assert resolve_label("Riding_A_Bike") == ("riding a bike", "case_or_spacing")
    assert resolve_label("  Dying   Hair ") == ("dyeing hair", "renamed")
    assert resolve_label("no such class") == (None, None)
    assert resolve_label("No Such_Class", {"no such class": "zumba"}) == ("zumba", "alias")


def unknown_inputs(root):
    write_split(root, "k400", "train", [("abseiling", A, 0, 10), ("space walking", B, 0, 10),
                                        ("space walking", C, 0, 10)])
    write_split(root, "k700", "train", [("moon dancing", A, 0, 10), ("zumba", D, 0, 10)])
    return root / "k400", None, root / "k700"


def test_unknown_labels_stop_the_build_with_file_and_rows(tmp_path):
    dirs = unknown_inputs(tmp_path / "in")
    with pytest.raises(ManifestError) as e:
        build_k710(*dirs, tmp_path / "out")
    message = str(e.value)
    assert "2 label(s) have no K710 class" in message
    assert f"'space walking' in {tmp_path / 'in' / 'k400' / 'train.csv'}: 2 row(s)" in message
    assert f"'moon dancing' in {tmp_path / 'in' / 'k700' / 'train.csv'}: 1 row(s)" in message
    assert "--label-aliases" in message and "--on-unknown-label drop" in message
    assert not (tmp_path / "out").exists()

    result = CliRunner().invoke(data, ["build-k710", "--k400", str(dirs[0]), "--k700", str(dirs[2]),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Error: 2 label(s) have no K710 class" in result.output and "'space walking'" in result.output
    assert not (tmp_path / "out").exists()


def test_drop_mode_drops_and_reports_before_dedup(tmp_path):
    dirs = unknown_inputs(tmp_path / "in")
    report = build_k710(*dirs, tmp_path / "out", BuildK710Config(on_unknown_label="drop"))
    assert report["labels"]["unknown_rows_dropped"] == 3
    assert {(u["label"], u["rows"]) for u in report["labels"]["unknown"]} == {("space walking", 2),
                                                                            ("moon dancing", 1)}
    train = read_manifest(tmp_path / "out" / "train.parquet")
    # The dropped K700 row of A does not hide K400's labelled row of A.
    assert sorted(zip(train["video_id"], train["label"])) == sorted([(A, "abseiling"), (D, "zumba")])
    assert "unknown labels: 2 names, 3 rows dropped" in kinetics.format_summary(report)


def test_label_aliases_place_unknown_labels(tmp_path):
    dirs = unknown_inputs(tmp_path / "in")
    aliases = tmp_path / "aliases.json"
    aliases.write_text(json.dumps({"Space Walking": "abseiling", "moon dancing": "zumba"}))
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(dirs[0]), "--k700", str(dirs[2]),
                                       "--out", str(tmp_path / "out"), "--label-aliases", str(aliases)])
    assert result.exit_code == 0, result.output
    train = read_manifest(tmp_path / "out" / "train.parquet").set_index("video_id")
    assert train.loc[[A, B, C], "label"].tolist() == ["zumba", "abseiling", "abseiling"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {m["label"]: m["how"] for m in report["labels"]["mapped"]} == {"space walking": "alias",
                                                                          "moon dancing": "alias"}


@pytest.mark.parametrize("aliases, message", [
    ({"space walking": "spacewalking"}, "'spacewalking' is not a K710 class name"),
    ({"drinking": "drinking beer"}, "already means 'sipping cup'"),
    ({"x": 3}, "is not a pair of strings"),
])
def test_bad_aliases_are_errors(tmp_path, aliases, message):
    with pytest.raises(ManifestError, match=re.escape(message)):
        BuildK710Config(label_aliases=aliases)
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps(aliases))
    dirs = unknown_inputs(tmp_path / "in")
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(dirs[0]), "--out", str(tmp_path / "out"),
                                       "--label-aliases", str(path)])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output


def test_alias_file_must_be_a_json_object(tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="expected a JSON object"):
        kinetics.load_label_aliases(path)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not a UTF-8 JSON file"):
        kinetics.load_label_aliases(path)


# ------------------------------------------------------------------------------- layouts and missing parts

K400_VAL_HEAD = """label,youtube_id,time_start,time_end,split,is_cc
abseiling,0wR5jVB-WPk,417,427,val,0
abseiling,3caPS4FHFF8,36,46,val,0
abseiling,3yaoNwz99xM,62,72,val,1
"air drumming",--nQbRBEz2s,104,114,val,0
"air drumming",2cPLjY5AWXU,1,11,val,0
"""
K400_TEST_HEAD = """youtube_id,time_start,time_end,split
--6bJUbfpnQ,17,27,test
--nQbRBEz2s,57,67,test
"""
K600_VAL_HEAD = """label,youtube_id,time_start,time_end,split
abseiling,yq_M1PMw2hY,38,48,val
abseiling,0wR5jVB-WPk,417,427,val
"""


def test_val_and_test_files_alone_with_deepmind_names(tmp_path):
    (tmp_path / "k400").mkdir()
    (tmp_path / "k400" / "kinetics-400_val.csv").write_text(K400_VAL_HEAD)
    (tmp_path / "k400" / "kinetics-400_test.csv").write_text(K400_TEST_HEAD)
    (tmp_path / "k600").mkdir()
    (tmp_path / "k600" / "validate.csv").write_text(K600_VAL_HEAD)
    report = build_k710(tmp_path / "k400", tmp_path / "k600", None, tmp_path / "out")
    assert report["skipped"] == ["k700: no --k700 folder given",
                                 f"k400 train: no train.csv in {tmp_path / 'k400'}",
                                 f"k600 train: no train.csv in {tmp_path / 'k600'}",
                                 f"k600 test: no test.csv in {tmp_path / 'k600'}"]
    val = read_manifest(tmp_path / "out" / "val.parquet")
    assert val["video_id"].is_unique and len(val) == 6  # 0wR5jVB-WPk is in both val files
    assert val.set_index("video_id").loc["0wR5jVB-WPk", "source"] == "k600"
    assert val["label_id"].between(0, 709).all()
    assert report["test_leakage"]["rows"]["val"] == 1  # --nQbRBEz2s
    assert (tmp_path / "out" / "train.csv").read_text() == ""
    assert len(read_manifest(tmp_path / "out" / "train.parquet")) == 0


def test_bom_and_crlf_files_are_read(tmp_path):
    folder = tmp_path / "k400"
    folder.mkdir()
    (folder / "val.csv").write_bytes(b"\xef\xbb\xbf" + K400_VAL_HEAD.replace("\n", "\r\n").encode())
    report = build_k710(folder, None, None, tmp_path / "out")
    assert report["rows_out"]["val"] == 5


def test_nothing_to_build(tmp_path):
    with pytest.raises(ManifestError, match="no annotation folder given"):
        build_k710(None, None, None, tmp_path / "out")
    write(tmp_path / "k400", "test.csv", TEST_HEADER, [f"{A},1,11,test"])
    with pytest.raises(ManifestError, match="no train or val file in any folder"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out")
    result = CliRunner().invoke(data, ["build-k710", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "pass at least one of --k400, --k600, --k700" in result.output


def test_out_may_not_be_an_input_folder(tmp_path):
    write_split(tmp_path, "k400", "val", [("yoga", A, 0, 10)])
    with pytest.raises(ManifestError, match="--out is the --k400 input folder"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "k400")


# --------------------------------------------------------------------------------------------- bad input

def bad_file_cases():
    """case -> (file bytes, line of the first bad row, reason). Most cases are rows under the official header,
    the last one bad; the rest are files that are wrong as a whole."""
    ok = row("yoga", A, 0, 10, "val", "k600")
    bad_last_row = {
        "non-numeric time": ([ok, ok, f"yoga,{B},abc,10,val"], "time_start 'abc' is not a number"),
        "reversed times": ([ok, f"yoga,{B},20,10,val"], "time_end 10 is not after time_start 20"),
        "equal times": ([f"yoga,{B},10,10,val"], "is not after"),
        "negative time": ([f"yoga,{B},-5,10,val"], "time_start -5 is negative"),
        "empty id": ([ok, "yoga,,0,10,val"], "empty youtube_id"),
        "id with a space": (["yoga,ab cdefghijk,0,10,val"], "contains whitespace"),
        "empty label": ([f",{B},0,10,val"], "empty label"),
        "extra field": ([ok, f"yoga,{B},0,10,val,1"], "6 fields where the header has 5"),
        "huge time": ([ok, f"yoga,{B},1e300,1e301,val"], "time_start 1e300 is beyond 86400 s (24 h)"),
        "end past a day": ([f"yoga,{B},86000,86401,val"], "time_end 86401 is beyond 86400 s"),
        "infinite time": ([f"yoga,{B},0,inf,val"], "time_end 'inf' is not a number"),
        "nan time": ([f"yoga,{B},nan,10,val"], "time_start 'nan' is not a number"),
        "id with a path": ([ok, "yoga,../../outside,0,10,val"], "youtube_id '../../outside' is not a YouTube ID"),
        "id with a separator": (["yoga,abc\\defghijk,0,10,val"], "is not a YouTube ID"),
        "id of dots": (["yoga,..,0,10,val"], "youtube_id '..' is not a YouTube ID"),
        "id not ascii": (["yoga,vidé,0,10,val"], "youtube_id 'vidé' is not a YouTube ID"),
        "long id": ([f"yoga,{'x' * 65},0,10,val"], "has 65 characters (at most 64)"),
    }
    cases = {name: ("\n".join([LABELED_HEADER, *rows, ""]).encode(), len(rows) + 1, reason)
             for name, (rows, reason) in bad_last_row.items()}
    return {**cases,
            "missing column": (LABELED_HEADER.replace(",time_end", "").encode() + b"\nyoga,x,1,val\n", 1,
                               "missing column(s) ['time_end']"),
            "empty file": (b"", 1, "the file is empty"),
            "blank file": (b"\n  \n", 1, "the file is empty"),
            "not utf-8": (f"{LABELED_HEADER}\n{ok}\n".encode() + b'"caf\xe9",x,0,10,val\n', 3, "not UTF-8")}


@pytest.mark.parametrize("case", list(bad_file_cases()))
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, case):
    content, line, reason = bad_file_cases()[case]
    write_split(tmp_path, "k400", "train", [("yoga", A, 0, 10)])
    bad = tmp_path / "k600" / "val.csv"
    bad.parent.mkdir()
    bad.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.csv").write_text("an earlier build\n")
    with pytest.raises(ManifestError) as e:
        build_k710(tmp_path / "k400", tmp_path / "k600", None, out)
    assert str(e.value).startswith(f"{bad}, line {line}: ") and reason in str(e.value)
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(tmp_path / "k400"),
                                       "--k600", str(tmp_path / "k600"), "--out", str(out)])
    assert result.exit_code == 1
    assert f"Error: {bad}, line {line}: " in result.output and reason in result.output
    assert [p.name for p in out.iterdir()] == ["train.csv"]
    assert (out / "train.csv").read_text() == "an earlier build\n"


def test_bad_rows_are_counted(tmp_path):
    lines = [f"yoga,{B},abc,10,val", f"yoga,{C},5,1,val", f"yoga,{D},0,10,val"]
    write(tmp_path / "k400", "val.csv", LABELED_HEADER, lines)
    with pytest.raises(ManifestError, match=r"line 2: time_start 'abc' .*; 2 bad rows in this file"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out")


def test_bad_test_file_is_an_error_too(tmp_path):
    write_split(tmp_path, "k400", "val", [("yoga", A, 0, 10)])
    write(tmp_path / "k400", "test.csv", "time_start,time_end,split", ["1,11,test"])
    with pytest.raises(ManifestError, match=r"test.csv, line 1: missing column\(s\) \['youtube_id'\]"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out")


def test_folder_problems(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no csv here")
    with pytest.raises(ManifestError, match="no CSV file in this --k400 folder"):
        build_k710(tmp_path / "empty", None, None, tmp_path / "out")
    result = CliRunner().invoke(data, ["build-k710", "--k600", str(tmp_path / "missing"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--k600 folder not found" in result.output
    write(tmp_path / "other", "annotations.csv", LABELED_HEADER, [])
    with pytest.raises(ManifestError, match=r"no train.csv, val.csv or test.csv .*annotations.csv"):
        build_k710(tmp_path / "other", None, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ output faults

@contextmanager
def read_only(path: Path):
    """path made read-only for this process: a tmpfs remounted read-only under root (root ignores modes)."""
    if os.geteuid() == 0:
        with mounted_disk(path, 1 << 20) as disk:
            yield disk.read_only
    else:
        path.mkdir()
        try:
            yield lambda: path.chmod(0o555)
        finally:
            path.chmod(0o755)


def assert_output_error(tmp_path, out, dirs, reason, fix):
    """build-k710 into out fails with one line naming out, its reason and the fix; earlier outputs stay."""
    earlier = {p.name: p.read_bytes() for p in out.iterdir()} if out.is_dir() else None
    with pytest.raises(OutputError) as e:
        build_k710(*dirs, out)
    message = str(e.value)
    assert message.startswith(f"cannot write to {out}: {reason}") and "\n" not in message
    assert fix in message and "rerun the same command" in message
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(dirs[0]), "--k600", str(dirs[1]),
                                       "--k700", str(dirs[2]), "--out", str(out)])
    assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    if earlier is not None:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
    return message


def test_read_only_output_folder(tmp_path):
    dirs = full_inputs(tmp_path / "in")
    with read_only(tmp_path / "out") as make_read_only:
        (tmp_path / "out" / "train.csv").write_text("an earlier build\n")
        make_read_only()
        if os.geteuid() == 0:
            assert_output_error(tmp_path, tmp_path / "out", dirs, "read-only file system",
                                "Choose a folder on a writable file system")
        else:
            assert_output_error(tmp_path, tmp_path / "out", dirs, "permission denied", "Change its permissions")


def test_output_that_is_a_file(tmp_path):
    dirs = full_inputs(tmp_path / "in")
    (tmp_path / "out").write_text("not a folder\n")
    # (The CLI refuses an existing file as --out before it starts: a usage error; the library says it.)
    with pytest.raises(OutputError, match=re.escape(f"cannot write to {tmp_path / 'out'}: it is a file, not a "
                                                    "folder. Remove the file in the way")):
        build_k710(*dirs, tmp_path / "out")
    assert_output_error(tmp_path, tmp_path / "out" / "k710", dirs, "a parent is not a folder", "Check the path")
    assert (tmp_path / "out").read_text() == "not a folder\n"


def test_full_disk_leaves_the_earlier_build(tmp_path):
    dirs = full_inputs(tmp_path / "in")
    with mounted_disk(tmp_path / "disk", 16 << 10) as small:
        disk = small.path
        (disk / "k710").mkdir()
        (disk / "k710" / "train.csv").write_text("an earlier build\n")
        for out in (disk / "k710", disk / "new"):
            message = assert_output_error(tmp_path, out, dirs, "no space left on device", "Free space there")
            assert re.search(r"no space left on device \([\d.]+ [KMG]?i?B free\)", message)
        assert not (disk / "new").exists()


# ------------------------------------------------------------------------------------------ path template

def test_path_template_fields(tmp_path):
    dirs = full_inputs(tmp_path / "in")
    config = BuildK710Config(path_template="/data/{split}/{source}/{label}/{video_id}-{start:.1f}-{label_id:03d}.mp4")
    build_k710(*dirs, tmp_path / "out", config)
    lines = (tmp_path / "out" / "val.csv").read_text().splitlines()
    assert lines[0] == f"/data/val/k400/yoga/{I}-4.0-{K710['yoga']:03d}.mp4 {K710['yoga']}"
    assert lines[2] == f"/data/val/k700/riding_a_bike/{K}-0.0-{K710['riding a bike']:03d}.mp4 {K710['riding a bike']}"
    config = BuildK710Config(path_template="{key}.mp4")
    build_k710(*dirs, tmp_path / "out2", config)
    assert "_-0123456789_000003_000013.mp4 " in (tmp_path / "out2" / "train.csv").read_text()


@pytest.mark.parametrize("template, message", [
    ("{video}.mp4", "unknown field(s) ['video']"),
    ("{}.mp4", "unknown field(s) ['']"),
    ("{start:q}.mp4", "does not format"),
    ("clips dir/{video_id}.mp4", "has whitespace"),
    ("{video_id", "does not parse"),
    ("{split}/{label}.mp4", "gives every clip the same path"),
])
def test_bad_templates_are_refused_before_reading(tmp_path, template, message):
    with pytest.raises(ManifestError, match=re.escape(message)):
        BuildK710Config(path_template=template)
    result = CliRunner().invoke(data, ["build-k710", "--k400", str(tmp_path / "none"), "--out",
                                       str(tmp_path / "out"), "--path-template", template])
    assert result.exit_code == 1 and message in result.output


@pytest.mark.parametrize("template, value", [("{video_id}/{start:/>8}.mp4", "///////0"),
                                             ("{label:.<2.0}/{video_id}.mp4", ".."),
                                             ("{video_id:\\<12}.mp4", A + "\\")])
def test_template_fields_stay_inside_their_folder(tmp_path, template, value):
    write_split(tmp_path, "k400", "val", [("yoga", A, 0, 10)])
    with pytest.raises(ManifestError, match=re.escape(f"puts {value!r} into")):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out", BuildK710Config(path_template=template))
    assert not (tmp_path / "out").exists()
    # A dot inside a field is fine: only a whole '.' or '..' could leave the folder.
    build_k710(tmp_path / "k400", None, None, tmp_path / "out", BuildK710Config(path_template="{key}{source:.>5}"))
    assert (tmp_path / "out" / "val.csv").read_text() == f"{A}_000000_000010.k400 {K710['yoga']}\n"


def test_template_that_pads_with_spaces_is_refused(tmp_path):
    write_split(tmp_path, "k400", "val", [("yoga", A, 0, 10)])
    with pytest.raises(ManifestError, match="puts whitespace into start"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out", BuildK710Config(path_template="{video_id}_{start:6d}"))


def test_fractional_times(tmp_path):
    write_split(tmp_path, "k400", "val", [("yoga", A, 1.5, 11.5), ("yoga", B, 2, 12)])
    # The default template wants whole seconds, as in the official lists.
    with pytest.raises(ManifestError, match=r"cannot format start values .*\{start:09.3f\}"):
        build_k710(tmp_path / "k400", None, None, tmp_path / "out")
    build_k710(tmp_path / "k400", None, None, tmp_path / "out", BuildK710Config(path_template="{key}.mp4"))
    val = read_manifest(tmp_path / "out" / "val.parquet")
    assert val["key"].tolist() == [f"{A}_000001_500_000011_500", f"{B}_000002_000012"]
    assert val["start_sec"].tolist() == [1.5, 2.0]
    config = BuildK710Config(path_template="{video_id}_{start:09.3f}.mp4")
    build_k710(tmp_path / "k400", None, None, tmp_path / "out3", config)
    assert (tmp_path / "out3" / "val.csv").read_text().splitlines()[0] == f"{A}_00001.500.mp4 {K710['yoga']}"
    # One file with fractional times, one with whole seconds: both read, the same ID compared across them.
    write_split(tmp_path, "k600", "val", [("yoga", C, 3, 13), ("yoga", B, 2, 12)])
    report = build_k710(tmp_path / "k400", tmp_path / "k600", None, tmp_path / "out4",
                        BuildK710Config(path_template="{key}.mp4"))
    val = read_manifest(tmp_path / "out4" / "val.parquet")
    assert val["start_sec"].tolist() == [1.5, 3.0, 2.0] and val["end_sec"].tolist() == [11.5, 13.0, 12.0]
    assert report["duplicates"]["by_kind"]["same_segment_same_label"] == 1


def test_non_youtube_ids_get_safe_unique_keys(tmp_path):
    write_split(tmp_path, "k400", "val", [("yoga", "a.b", 0, 10), ("yoga", "-x", 0, 10), ("yoga", "_-x", 1, 11)])
    build_k710(tmp_path / "k400", None, None, tmp_path / "out")
    val = read_manifest(tmp_path / "out" / "val.parquet")
    assert val["key"].tolist() == ["a_b_000000_000010", "_-x_000000_000010", "_-x_000001_000011"]
    write_split(tmp_path, "k401", "val", [("yoga", "-x", 0, 10), ("yoga", "_-x", 0, 10)])
    with pytest.raises(ManifestError, match="two YouTube IDs give the same key '_-x_000000_000010'"):
        build_k710(tmp_path / "k401", None, None, tmp_path / "out2")
    # The manifest's row groups had gone to its writer before the keys were found to clash: nothing is left.
    assert not (tmp_path / "out2").exists()


REAL = Path(__file__).parent / "data" / "kinetics-real"


def test_real_kinetics_excerpts(tmp_path):
    """build-k710 on real rows of the K400 and K600 val and test files (tests/data/kinetics-real/README.md)."""
    runner = CliRunner()
    args = ["build-k710", "--k400", str(REAL / "k400"), "--k600", str(REAL / "k600")]
    refused = runner.invoke(data, args + ["--out", str(tmp_path / "refused")])
    assert refused.exit_code != 0 and not (tmp_path / "refused").exists()
    assert "'chopping vegetables' in " in refused.output and "k600/val.csv: 2 row(s)" in refused.output
    assert "--on-unknown-label drop" in refused.output

    out = tmp_path / "k710"
    result = runner.invoke(data, args + ["--out", str(out), "--on-unknown-label", "drop"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["labels"]["unknown"] == [{"label": "chopping vegetables", "file": str(REAL / "k600" / "val.csv"),
                                            "rows": 2}]
    assert {m["label"]: m["k710"] for m in report["labels"]["mapped"]} == {
        "passing american football (not in game)": "passing American football (not in game)",
        "picking fruit": "picking apples"}

    # Expected from the CSVs alone: every val ID once, K600 winning the IDs both versions list.
    k400 = pd.read_csv(REAL / "k400" / "val.csv", dtype=str)
    k600 = pd.read_csv(REAL / "k600" / "val.csv", dtype=str)
    k600 = k600[k600["label"] != "chopping vegetables"]
    expected = set(k400["youtube_id"]) | set(k600["youtube_id"])
    val = read_manifest(out / "val.parquet")
    assert len(val) == len(set(val["video_id"])) == len(expected) and set(val["video_id"]) == expected
    assert (val.loc[val["video_id"].isin(set(k600["youtube_id"])), "source"] == "k600").all()
    lines = (out / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 710 and val["label_id"].between(0, 709).all()
    assert all(lines[i] == name for i, name in zip(val["label_id"], val["label"]))
    assert report["rows_out"] == {"train": 0, "val": len(expected)}
    # Test files are read (label-less); leakage is whatever real val IDs they share, counted not removed.
    tests = set(pd.read_csv(REAL / "k400" / "test.csv", dtype=str)["youtube_id"]) | set(
        pd.read_csv(REAL / "k600" / "test.csv", dtype=str)["youtube_id"])
    assert report["test_leakage"]["rows"]["val"] == len(expected & tests)
    assert len((out / "val.csv").read_text().splitlines()) == len(expected)
