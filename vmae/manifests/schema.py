"""The manifest: one row per clip, one schema for every step of the data flow."""
import hashlib
import re
from collections import defaultdict

import pyarrow as pa

# Every manifest carries every column; a column that a step knows nothing about is null. Keeping one
# fixed schema means any step can read any other step's output without negotiating columns.
SCHEMA = pa.schema([
    ("key", pa.string()),          # unique, filesystem- and WebDataset-safe (see KEY_PATTERN)
    ("source", pa.string()),       # k400 | k600 | k700 | ssv2 | ava | webvid | instagram | any import name
    ("video_id", pa.string()),     # YouTube id, SSV2 id, AVA movie id, WebVid id, ...
    ("url", pa.string()),          # where download fetches it; null for YouTube ids (URL template)
    ("path", pa.string()),         # the local clip once it exists
    ("start_sec", pa.float64()),
    ("end_sec", pa.float64()),
    ("start_frame", pa.int64()),   # frame-exact cuts (AVA): first frame and count, instead of seconds
    ("num_frames", pa.int64()),
    ("label", pa.string()),        # canonical class name, or null for unlabeled sources
    ("label_id", pa.int64()),      # index into the manifest's class list (K710 for Kinetics)
    ("split", pa.string()),        # train | val | test
    ("stride", pa.int64()),        # temporal sampling stride: 2 for SSV2, 4 otherwise
    ("fps", pa.float64()),         # probe facts, filled by download / probing
    ("frames", pa.int64()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("duration", pa.float64()),
    ("codec", pa.string()),
    ("status", pa.string()),       # null = not processed yet, "ok", or a failure reason
    ("error", pa.string()),        # the human-readable message behind a failed status
])

COLUMNS = SCHEMA.names
REQUIRED = ("key", "source")

# Sources are named as the UnlabeledHybrid's parts in the paper's Table 2, by `mix` (its options) and `stats`
# (its rows) alike. A K710 row's `source` column keeps the Kinetics version it came from (provenance); it
# counts as k710.
MIXTURE_SOURCES = ("k710", "ssv2", "ava", "webvid", "instagram")
K710_VERSIONS = ("k400", "k600", "k700")


def mixture_source(source: str) -> str:
    """The name a row's `source` is counted under: k400/k600/k700 -> k710, any other name unchanged."""
    return "k710" if source in K710_VERSIONS else source

# WebDataset splits a member name at its first dot, and keys become file names: letters, digits,
# '_' and '-' only, and no leading '-' so that no tool reads a key as an option. A file name holds at most
# 255 bytes; a clip's temporary name adds about 40 to the key (".KEY.mp4.tmp-PID-RANDOM").
MAX_KEY_LENGTH = 200
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def key_problem(key):
    """Why `key` cannot be a manifest key, or None."""
    if not isinstance(key, str) or key == "":
        return "empty key"
    if not KEY_PATTERN.match(key):
        return f"key {key!r} has characters other than letters, digits, '_' and '-'"
    if len(key) > MAX_KEY_LENGTH:
        return f"key {key[:40]}... is {len(key)} characters long (at most {MAX_KEY_LENGTH})"
    return None


def make_key(*parts) -> str:
    """Join parts into a safe key: unsafe characters become '_'."""
    key = "_".join(_UNSAFE.sub("_", str(p)) for p in parts if p is not None and str(p) != "")
    return key if not key.startswith("-") else "_" + key


def settle_keys(natural: list, ids: list):
    """Unique keys for rows whose natural keys (made safe from `ids`) may clash: every member of a clash gets
    a short hash of its id appended, so the result does not depend on row order.

    Returns (keys, clashes as [(natural key, [ids])]); a key still taken after that is None (its row is
    rejected by the caller).
    """
    groups = defaultdict(list)
    for i, key in enumerate(natural):
        groups[key].append(i)
    keys, clashes = list(natural), []
    for key, members in sorted(groups.items()):
        if len(members) > 1:
            clashes.append((key, [ids[i] for i in members]))
            for i in members:
                keys[i] = f"{key}_{hashlib.sha1(str(ids[i]).encode('utf-8')).hexdigest()[:8]}"
    seen = set()
    for i, key in enumerate(keys):
        if key in seen:
            keys[i] = None
        seen.add(key)
    return keys, clashes
