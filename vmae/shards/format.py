"""The sample format: the one contract between the curation half and the training half.

A sample is three tar members sharing a key: KEY.mp4 (clip bytes), KEY.json (metadata below),
KEY.cls (the label id as ASCII digits, labeled sets only).
"""
import json

import pandas as pd

# Manifest columns copied into KEY.json; training reads stride, fps and frames from here.
META_FIELDS = ("key", "source", "video_id", "label", "label_id", "split", "stride", "fps", "frames",
               "width", "height", "duration", "start_sec", "end_sec", "start_frame", "num_frames")


def sample_metadata(row) -> dict:
    """The KEY.json content for a manifest row (mapping); NaN/NA become null."""
    meta = {}
    for name in META_FIELDS:
        value = row.get(name)
        if value is None or (not isinstance(value, (str, bytes)) and pd.isna(value)):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        meta[name] = value
    return meta


def encode_sample(row, video: bytes, labeled: bool) -> dict:
    """Members of one sample, as bytes, in a fixed order: mp4, json, then cls when labeled."""
    meta = sample_metadata(row)
    sample = {"__key__": meta["key"], "mp4": video,
              "json": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")}
    if labeled:
        if meta["label_id"] is None:
            raise ValueError(f"row {meta['key']!r} has no label_id but the shard set is labeled")
        sample["cls"] = str(int(meta["label_id"])).encode("ascii")
    return sample


def decode_sample(sample: dict):
    """(key, video bytes, metadata dict, label id or None) from a WebDataset sample dict of raw bytes."""
    meta = json.loads(sample["json"])
    label = int(sample["cls"]) if sample.get("cls") is not None else None
    return sample["__key__"], sample["mp4"], meta, label

