"""What both dedup indexes share: entries sorted by key, and every two entries of a bucket of equal keys (in
one sorted table, or one in each of two), without all-pairs work."""
import numpy as np


def sort_by_key(blocks, total: int) -> tuple:
    """(keys, entries) uint32 [total]: the keys of `blocks` (uint32 arrays, `total` keys in all; entry i is the
    i-th key over the blocks in order) with their entry numbers, sorted by key. Each pair is sorted as one
    uint64, the key in the high half (numpy on a little-endian machine, as every platform vmae runs on); both
    results are views of that one array."""
    order = np.empty(total, np.uint64)
    halves = order.view(np.uint32)
    at = 0
    for keys in blocks:
        halves[1::2][at:at + len(keys)] = keys
        at += len(keys)
    halves[0::2] = np.arange(total, dtype=np.uint32)
    order.sort()
    return halves[1::2], halves[0::2]


def same_bucket(key: np.ndarray, max_bucket: int) -> tuple:
    """(iterator over (i, j): positions of two entries of one bucket of the sorted `key`, one offset j - i at a
    time; the number of buckets with more than max_bucket entries, which are skipped as uninformative).

    Only the entries of buckets of two or more are indexed (few), which keeps the memory at a few bytes per
    entry."""
    same = key[1:] == key[:-1]
    member = np.zeros(len(key), bool)
    member[1:] = same
    member[:-1] |= same
    at = np.flatnonzero(member)
    del same, member
    first = np.flatnonzero(np.r_[True, key[at[1:]] != key[at[:-1]]])
    sizes = np.diff(np.r_[first, len(at)])
    big = sizes > max_bucket
    return _offsets(key, at[~np.repeat(big, sizes)], max_bucket), int(big.sum())


def _offsets(key: np.ndarray, at: np.ndarray, max_bucket: int):
    for offset in range(1, max_bucket):
        at = at[at + offset < len(key)]
        at = at[key[at] == key[at + offset]]
        if not len(at):
            return
        yield at, at + offset


def meeting(key: np.ndarray, other: np.ndarray, max_bucket: int) -> tuple:
    """(iterator over (i, j): positions in the sorted `key` and the sorted `other` of two entries with equal
    keys, one j at a time for each i; the number of buckets of `other` with more than max_bucket entries met
    by `key`, which are skipped)."""
    lo, hi = np.searchsorted(other, key, "left"), np.searchsorted(other, key, "right")
    size = hi - lo
    big = size > max_bucket
    at = np.flatnonzero((size > 0) & ~big)
    return _across(at, lo, size), len(np.unique(key[big]))


def _across(at: np.ndarray, lo: np.ndarray, size: np.ndarray):
    for offset in range(int(size[at].max(initial=0))):
        at = at[size[at] > offset]
        yield at, lo[at] + offset
