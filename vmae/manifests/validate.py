"""Row checks shared by every step: a bad row is returned with its reason, never dropped silently."""
from pathlib import Path

import pandas as pd

from vmae.atomic import atomic_path
from vmae.manifests.schema import key_problem

REJECT_COLUMNS = ["file", "line", "key", "reason"]
# The longest video a row may refer to: a week. Larger times are typing or parsing errors (a 1e300 in a
# CSV), and would make keys and ffmpeg arguments that no file system or tool takes.
MAX_SECONDS = 7 * 24 * 3600.0
MAX_FRAMES = 10**8
MAX_ID_LENGTH = 1024


def row_problems(row) -> list:
    """Every reason why one manifest row (a mapping) is unusable; empty when the row is fine."""
    problems = []
    key = row.get("key")
    problem = key_problem(key if key is None or isinstance(key, str) else str(key))
    if problem:
        problems.append(problem)
    if not row.get("source"):
        problems.append("empty source")
    problem = id_problem(row.get("video_id"))
    if problem:
        problems.append(problem)
    start, end = row.get("start_sec"), row.get("end_sec")
    if _present(start) and start < 0:
        problems.append(f"start_sec {start} is negative")
    for name, value in (("start_sec", start), ("end_sec", end)):
        if _present(value) and not value <= MAX_SECONDS:
            problems.append(f"{name} {value} is beyond {MAX_SECONDS:.0f} s (a week): not a time in a video")
    if _present(start) and _present(end) and end <= start:
        problems.append(f"end_sec {end} is not after start_sec {start}")
    for name, low in (("start_frame", 0), ("num_frames", 1)):
        value = row.get(name)
        if _present(value) and not low <= value <= MAX_FRAMES:
            problems.append(f"{name} {value} is outside {low}..{MAX_FRAMES}")
    stride = row.get("stride")
    if _present(stride) and stride < 1:
        problems.append(f"stride {stride} is below 1")
    label_id = row.get("label_id")
    if _present(label_id) and label_id < 0:
        problems.append(f"label_id {label_id} is negative")
    return problems


def id_problem(video_id):
    """Why a video_id cannot be used (too long, or control characters), or None."""
    if video_id is None or (not isinstance(video_id, str) and pd.isna(video_id)):
        return None
    video_id = str(video_id)
    if len(video_id) > MAX_ID_LENGTH:
        return f"video_id {video_id[:40]!r}... is {len(video_id)} characters long (at most {MAX_ID_LENGTH})"
    if any(ord(c) < 32 or ord(c) == 127 for c in video_id):
        return f"video_id {video_id!r} holds control characters"
    return None


def validate(df: pd.DataFrame, file=None, first_line: int = 0):
    """Split a manifest into (good rows, rejects). Duplicate keys after the first are rejected.

    `first_line` is the file line (or row number) of df's first row, so rejects point into the file.
    """
    reasons = {}
    for i, row in enumerate(df.to_dict("records")):
        problems = row_problems(row)
        if problems:
            reasons[i] = "; ".join(problems)
    dup = df["key"].notna() & df["key"].duplicated(keep="first")
    for i in dup.to_numpy().nonzero()[0]:
        reasons.setdefault(int(i), f"duplicate key {df['key'].iloc[i]!r}")
    rejects = pd.DataFrame(
        [{"file": None if file is None else str(file), "line": first_line + i,
          "key": df["key"].iloc[i], "reason": r} for i, r in sorted(reasons.items())],
        columns=REJECT_COLUMNS)
    good = df.drop(index=df.index[sorted(reasons)]).reset_index(drop=True)
    return good, rejects


def _present(value) -> bool:
    return value is not None and not pd.isna(value)


def excluded_lines(reasons: dict, rejects_file: str | None = None) -> list:
    """Report lines for the rows left out, by reason (reason -> count), the most frequent first, and the file
    that lists them (write_rejects)."""
    lines = [f"  excluded {n}: {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    return lines + ([f"  excluded rows, each with its line and reason: {rejects_file}"] if rejects_file else [])


def write_rejects(rejects: pd.DataFrame, manifest_path) -> str | None:
    """Write rejects next to a manifest as NAME.rejects.csv (atomically) and return its path; None, and no
    file, when empty."""
    path = Path(manifest_path).with_suffix(".rejects.csv")
    if len(rejects) == 0:
        if path.exists():
            path.unlink()  # a stale list from an earlier run would misreport this one
        return None
    with atomic_path(path) as tmp:
        rejects.to_csv(tmp, index=False)
    return str(path)
