"""A run folder belongs to one run: who may write into --output-dir, and which checkpoint a run resumes from.

pretrain, finetune and distill write config.json, log.jsonl, tb/ and checkpoints into their output folder.
Before any of that, `claim` has global rank 0 take the folder's lock (`.lock`, naming its owner's host and
pid; see vmae.lock) for the whole run, so that a second job started into the same folder stops at once
instead of interleaving its checkpoints and log with the first one's. One lock per job: rank 0 holds it,
also when several nodes share the folder (the other ranks never write there). Then rank 0 decides:

- no --resume: a folder that holds a run (config.json, log.jsonl or checkpoints) is refused; the message
  offers --resume auto or a new folder;
- --resume auto: the newest readable checkpoint; none at all is a fresh start; checkpoints of which none can
  be read are refused, by name (a silent restart at step 0 would overwrite the run's log and, with
  --keep-last, lose the new checkpoints to the broken ones' higher step numbers);
- --resume PATH: that file (checked when it is loaded).

Every rank gets rank 0's answer, or the same error, so no rank waits in a collective for one that stopped.
Once the run knows its start step, `rewind` makes the folder read as one run: log.jsonl keeps the records
up to that step and checkpoints of later steps (from a timeline that resumed from an earlier point, or left
unreadable) are renamed aside with SET_ASIDE appended, never deleted.
"""
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from vmae.atomic import write_text
from vmae.errors import FolderInUseError, OutputError
from vmae.lock import Lock, describe
from vmae.training import checkpoint, distributed

log = logging.getLogger(__name__)

LOCK = ".lock"
CONFIG = "config.json"
LOG = "log.jsonl"
BEST = "checkpoint-best.pth"
SET_ASIDE = ".set-aside"


def run_marks(out) -> list[str]:
    """What in folder `out` shows that a run wrote there (empty for a new or unrelated folder)."""
    out = Path(out)
    marks = [name for name in (CONFIG, LOG, BEST) if (out / name).exists()]
    numbered = checkpoint.numbered_checkpoints(out) if out.is_dir() else []
    if numbered:
        marks.append(f"{len(numbered)} checkpoint(s) up to step {numbered[-1][0]}")
    return marks


def pick_resume(resume: str | None, out) -> Path | None:
    """The checkpoint this run resumes from (None: a fresh start), or an error saying why it may not start."""
    out = Path(out)
    if resume is None:
        marks = run_marks(out)
        if marks:
            raise FolderInUseError(
                f"{out} holds a run ({', '.join(marks)}). Pass --resume auto to continue it from its newest "
                "checkpoint, or choose a new --output-dir; a run folder is never overwritten")
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint file (use --resume auto to continue "
                                    "from the newest checkpoint in --output-dir)")
        return path
    numbered = checkpoint.numbered_checkpoints(out) if out.is_dir() else []
    damaged = []
    for step, path in reversed(numbered):
        try:
            problem = checkpoint.damage(path)
        except OSError as e:
            problem = f"cannot be read ({e.strerror or e})"
        if problem is None:
            if damaged:
                log.warning("resuming from %s: the newer %s cannot be read (%s); they are set aside", path.name,
                            ", ".join(p.name for p, _ in damaged), "; ".join(f"{p.name} {why}" for p, why in damaged))
            return path
        damaged.append((path, problem))
    if damaged:
        listed = "; ".join(f"{path.name} {problem}" for path, problem in damaged)
        raise checkpoint.CheckpointError(
            f"--resume auto: none of the {len(damaged)} checkpoint(s) in {out} can be read: {listed}. Restore a "
            "good copy into the folder; or move them away to start over at step 0 in this folder; or "
            "choose a new --output-dir")
    return None


@contextmanager
def claim(output_dir, resume: str | None, info):
    """Hold `output_dir` for this run (rank 0 takes its lock until the block ends) and yield the checkpoint to
    resume from (None for a fresh start), the same on every rank; see the module notes."""
    out = Path(output_dir)
    lock = Lock(out / LOCK) if info.is_main else None

    def take():
        if not lock.acquire():
            raise FolderInUseError(f"{out} is in use by another run: {describe(lock.path, lock.owner)}")
        return pick_resume(resume, out)

    try:
        resume_from = distributed.main_only(take, info)
        try:
            yield resume_from
        except OutputError as e:
            # a full or read-only disk mid-run: say how this run goes on once it is fixed
            newest = checkpoint.latest_checkpoint(out)
            how = (f"it goes on from {newest.name}, the newest checkpoint kept" if newest else
                   "no checkpoint was saved yet, so it starts over")
            raise OutputError(f"{e}. For this training run, rerun with --resume auto: {how}") from e
    finally:
        if lock is not None:
            lock.release()


def rewind(output_dir, step: int) -> list[Path]:
    """Rank 0, once the start step is known: drop log.jsonl records after `step` (and a last line cut short by
    a kill or a full disk), and rename the checkpoints of later steps aside. Returns the renamed files."""
    out = Path(output_dir)
    path = out / LOG
    if path.exists():
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + "\n")
        write_text(path, "".join(kept))
    moved = []
    for later, ckpt in checkpoint.numbered_checkpoints(out):
        if later > step:
            aside = ckpt.with_name(ckpt.name + SET_ASIDE)
            os.replace(ckpt, aside)
            moved.append(aside)
    if moved:
        log.warning("resumed at step %d: set aside the later checkpoint(s) %s (renamed, not deleted)", step,
                    ", ".join(p.name for p in moved))
    return moved
