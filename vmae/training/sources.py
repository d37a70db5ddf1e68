"""Which samples a loader worker reads, from where: the shard URLs of a pattern, and the reading stages of
the stream (an exact epoch's ranges, resampled or listed whole shards), each sample as webdataset's dict of
member bytes. A sample that cannot be read comes out as a `Failed` marker at its epoch position, so the
stream can count it.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds

from vmae.shards.files import is_pipe, tar_samples
from vmae.shards.index import read_shards_json

log = logging.getLogger(__name__)


def shard_sets(shards: str) -> list[list[str]]:
    """The shard URLs of each '::'-joined set of a pattern: braces expanded; a shard folder (local, or a URL
    ending in '/' or in a name without a dot) stands for the shards its shards.json lists (so a user need
    not count them)."""
    sets = []
    for part in shards.split("::"):
        if is_folder(part):
            folder = part.rstrip("/")
            sets.append([f"{folder}/{entry['file']}" for entry in read_shards_json(folder)["shards"]])
        else:
            sets.append(wds.shardlists.expand_urls(part))
    return sets


def is_folder(part: str) -> bool:
    path = local_path(part)
    if path is not None:
        return path.is_dir()
    name = part.rstrip("/").rsplit("/", 1)[-1]
    return not is_pipe(part) and (part.endswith("/") or ("." not in name and "{" not in part))


def shard_urls(shards: str) -> list[str]:
    """Every shard URL of a pattern (see shard_sets), the sets concatenated."""
    urls = [url for urls in shard_sets(shards) for url in urls]
    if not urls:
        raise ValueError(f"the shard pattern {shards!r} names no shard")
    return urls


def local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        return Path(url[5:])
    return None if ":" in url.split("/")[0] else Path(url)


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """The shards a rank reads in a val/test pass (round-robin over the URL list)."""
    return urls[rank::world_size]


def worker_shards(urls: list[str], worker: int, num_workers: int) -> list[str]:
    return urls[worker::num_workers]


@dataclass(frozen=True)
class Failed:
    """A sample that could not be read or decoded, at epoch position `pos` (-1 outside exact streams)."""
    pos: int


def log_and_continue(err) -> bool:
    log.warning("shard read error, going on with the next shard: %s", err)
    return True


def read_shards(sources):
    for source in sources:
        yield from tar_samples(source["url"], handler=log_and_continue)


def read_ranges(ranges, urls: list[str], ends: list[np.ndarray]):
    """An exact stream's samples: each Range read sequentially from the byte offsets of the index, each sample
    tagged with its epoch position. Samples a range fails to give (a read error) come out as Failed."""
    for r in ranges:
        offsets, want, got = ends[r.shard], r.stop - r.start, 0
        start = int(offsets[r.start - 1]) if r.start else 0
        for sample in tar_samples(urls[r.shard], start, int(offsets[r.stop - 1]), log_and_continue):
            if got == want:
                log.warning("%s: bytes %d-%d hold more samples than its index lists (%d): the index is stale; "
                            "rewrite the shard set with `vmae-data shard`", urls[r.shard], start,
                            offsets[r.stop - 1], want)
                break
            sample["__pos__"], sample["__repeat__"] = r.pos + got, r.repeat
            got += 1
            yield sample
        if got < want:
            log.warning("%s: %d of samples %d-%d could not be read", urls[r.shard], want - got, r.start, r.stop - 1)
        for pos in range(r.pos + got, r.pos + want):
            yield Failed(pos)


def take(items, index: int, count: int):
    for i, item in enumerate(items):
        if i % count == index:
            yield item
