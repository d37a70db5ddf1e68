"""The job an output folder holds: the first run records what it makes (its input and the options that
decide the output), every rerun compares. The same job resumes; another job is refused before any work,
so that a second download, cut or shard set never silently replaces the first one's outputs."""
import hashlib
import json
from pathlib import Path

from vmae.atomic import write_text
from vmae.errors import FolderInUseError


def digest(values) -> str:
    """A short fingerprint of JSON-able values (e.g. the rows of a job)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def claim(record, job: dict, what: str) -> None:
    """Record `job` in the file `record`, or check that the one recorded there is the same.

    `what` names the job for the message, e.g. "download"; the folder is the record's parent.
    """
    record = Path(record)
    if record.exists():
        try:
            before = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None  # a damaged record: the outputs themselves are checked on reuse
        if before is not None and before != job:
            differ = sorted(k for k in set(before) | set(job) if before.get(k) != job.get(k))
            raise FolderInUseError(
                f"{record.parent} holds the {what} of another job (it differs in: {', '.join(differ)}; "
                f"recorded {json.dumps({k: before.get(k) for k in differ})}, now "
                f"{json.dumps({k: job.get(k) for k in differ})}). Rerun with the same input and options to "
                "resume it, or pass a new output folder")
        if before is not None:
            return
    write_text(record, json.dumps(job, indent=1, sort_keys=True) + "\n")
