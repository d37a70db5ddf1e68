"""Check a shard folder against its index: every problem is listed, none stops the check.

Per shard (in parallel, one unit per shard): size and sha256 against shards.json; a full read of the tar
with tarfile (complete members, nothing after a broken header); each member against index.parquet (name,
data offset, size) and back; every KEY.json valid JSON for its key; every sample has mp4 + json (+ cls for
labeled sets, equal to the JSON's label_id); sample and per-source counts; with decode, every clip decodes
frame by frame with the project's decoder. Across the folder: tars that shards.json does not list, and listed
or indexed shards that are missing.
"""
import hashlib
import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vmae.executors import ExecutorConfig, run_units
from vmae.shards import index as shard_index

DECODE_CHUNK = 128     # frames decoded per call: bounds memory on long, large clips


@dataclass(frozen=True)
class ShardCheck:
    path: str
    expected: dict         # the shard's shards.json entry
    members: tuple         # (member, offset, size) from index.parquet
    labeled: bool
    decode: bool


@dataclass
class VerifyReport:
    shard_dir: Path
    shards: int = 0
    samples: int = 0
    decoded: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _decode_problem(video: bytes):
    """None when every frame decodes, else the error."""
    from vmae.training.decode import DEFAULT_DECODER, get_decoder

    try:
        with get_decoder(DEFAULT_DECODER).open(video) as reader:
            if reader.num_frames < 1:
                return "has no frames"
            for start in range(0, reader.num_frames, DECODE_CHUNK):
                reader.get_frames(range(start, min(start + DECODE_CHUNK, reader.num_frames)))
    except Exception as e:  # any failure to decode is the finding, whatever the backend raises
        return f"does not decode ({type(e).__name__}: {e})"
    return None


def _members(path: str, problems: list, name: str):
    """Yield (member, offset, size, bytes) reading the tar as a reader would; a broken archive ends the
    iteration with a problem appended."""
    count = 0
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    problems.append(f"{name}: member {info.name!r} is not a regular file")
                    continue
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {info.name} is truncated ({len(data)} of {info.size} bytes)")
                count += 1
                yield info.name, info.offset_data, info.size, data
            # tarfile stops quietly at a missing header; a complete archive ends with two zero blocks.
            tar.fileobj.seek(tar.offset)
            if tar.fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
                problems.append(f"{name}: no end-of-archive marker after {count} members (the file is truncated)")
    except (tarfile.TarError, OSError, EOFError) as e:
        problems.append(f"{name}: unreadable after {count} members ({e})")


def _grouped(members):
    """Group consecutive members by key (WebDataset's rule: the key is the name up to the first dot)."""
    key, sample = None, {}
    for member, _, _, data in members:
        k, _, ext = member.partition(".")
        if sample and k != key:
            yield key, sample
            sample = {}
        key = k
        sample[ext] = data
    if sample:
        yield key, sample


def _sample_problems(name: str, key: str, sample: dict, labeled: bool):
    """(problems, metadata or None) for one sample's members."""
    problems, meta = [], None
    required = ("mp4", "json", "cls") if labeled else ("mp4", "json")
    missing = [f"{key}.{ext}" for ext in required if ext not in sample]
    if missing:
        problems.append(f"{name}: sample {key} lacks {', '.join(missing)}")
    if "" in sample:
        problems.append(f"{name}: member {key!r} has no extension (not KEY.ext)")
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError as e:
            problems.append(f"{name}: {key}.json is not valid JSON ({e})")
        else:
            if not isinstance(meta, dict) or meta.get("key") != key:
                problems.append(f"{name}: {key}.json does not describe key {key}")
                meta = None
    if "cls" in sample and meta is not None and sample["cls"].decode("ascii", "replace") != str(meta.get("label_id")):
        problems.append(f"{name}: {key}.cls is {sample['cls']!r} but {key}.json has label_id {meta.get('label_id')}")
    return problems, meta


def check_shard(check: ShardCheck) -> tuple:
    """(problems, samples, decoded) for one shard; holds one sample in memory at a time."""
    name, expected, problems = Path(check.path).name, check.expected, []
    size = Path(check.path).stat().st_size
    if size != expected["bytes"]:
        problems.append(f"{name}: {size} bytes, shards.json says {expected['bytes']}")
    if _sha256(check.path) != expected["sha256"]:
        problems.append(f"{name}: sha256 differs from shards.json (the file changed or is damaged)")
    indexed = {m: (offset, sz) for m, offset, sz in check.members}
    seen, keys, sources, decoded, scan_problems = set(), set(), Counter(), 0, []

    def checked(members):
        for member, offset, sz, data in members:
            seen.add(member)
            if member not in indexed:
                problems.append(f"{name}: member {member} is not in index.parquet")
            elif indexed[member] != (offset, sz):
                problems.append(f"{name}: member {member} at offset {offset} size {sz}, index.parquet says "
                                f"offset {indexed[member][0]} size {indexed[member][1]}")
            yield member, offset, sz, data

    for key, sample in _grouped(checked(_members(check.path, scan_problems, name))):
        if key in keys:
            problems.append(f"{name}: key {key} appears in two places (its members are not adjacent)")
        keys.add(key)
        found, meta = _sample_problems(name, key, sample, check.labeled)
        problems += found
        if meta is not None:
            sources[str(meta.get("source"))] += 1
        if check.decode and "mp4" in sample:
            problem = _decode_problem(sample["mp4"])
            if problem:
                problems.append(f"{name}: {key}.mp4 {problem}")
            else:
                decoded += 1
    problems += scan_problems
    problems += [f"{name}: index.parquet lists {m}, which the shard does not hold"
                 for m in indexed if m not in seen]
    if len(keys) != expected["samples"]:
        problems.append(f"{name}: {len(keys)} samples, shards.json says {expected['samples']}")
    if dict(sources) != expected["sources"]:
        problems.append(f"{name}: sources {dict(sorted(sources.items()))}, shards.json says {expected['sources']}")
    return problems, len(keys), decoded


def verify(shard_dir, decode: bool = False, workers: int = 1, progress: bool = True) -> VerifyReport:
    """Check every shard of shard_dir; the report lists each problem found (empty: all good)."""
    shard_dir = Path(shard_dir)
    report = VerifyReport(shard_dir)
    try:
        summary = shard_index.read_shards_json(shard_dir)
        index = shard_index.read_index(shard_dir)
    except (FileNotFoundError, ValueError, OSError) as e:
        report.problems.append(str(e))
        return report
    listed = {s["file"]: s for s in summary["shards"]}
    if not listed:
        report.problems.append(f"{shard_dir / shard_index.SHARDS_JSON}: lists no shard (an empty set is not a "
                               "finished one); rerun `vmae-data shard`")
    on_disk = {p.name for p in shard_dir.glob("*.tar")}
    report.problems += [f"{f}: in the folder but not in shards.json / index.parquet"
                        for f in sorted(on_disk - set(listed))]
    report.problems += [f"{f}: listed in shards.json but missing from the folder"
                        for f in sorted(set(listed) - on_disk)]
    indexed = index.groupby("shard")
    for f in sorted(set(indexed.groups) - set(listed)):
        report.problems.append(f"{f}: index.parquet has {len(indexed.groups[f])} members of it, "
                               "but shards.json does not list it")
    labeled = bool(summary.get("options", {}).get("labeled"))
    checks = []
    for f in sorted(set(listed) & on_disk):
        rows = indexed.get_group(f) if f in indexed.groups else index.iloc[:0]
        members = tuple(zip(rows["member"], rows["offset"].tolist(), rows["size"].tolist()))
        checks.append(ShardCheck(str(shard_dir / f), listed[f], members, labeled, decode))
    results = run_units(check_shard, checks, ExecutorConfig(workers=workers))
    if progress and checks:
        from tqdm import tqdm
        results = tqdm(results, total=len(checks), desc=f"verify {shard_dir}", unit="shard")
    for _, (problems, samples, decoded) in results:
        report.shards += 1
        report.samples += samples
        report.decoded += decoded
        report.problems += problems
    total = summary.get("totals", {}).get("samples")
    if total != sum(s["samples"] for s in summary["shards"]):
        report.problems.append(f"shards.json: totals.samples is {total}, its shards add up to "
                               f"{sum(s['samples'] for s in summary['shards'])}")
    report.problems.sort()
    return report
