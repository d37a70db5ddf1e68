"""Fetch, cut and check every clip of a manifest: `vmae-data download`.

Each row's source is, in this order: a file in --from-dir named by --from-template, the row's local
`path`, the row's `url`, or the URL template filled with the row's `video_id` (YouTube by default).
Remote sources are fetched with yt-dlp into a temporary folder, then one ffmpeg pass cuts [start_sec,
end_sec) (or the frame range) into OUT/clips/xx/KEY.mp4 (H.264, yuv420p, fixed keyframe interval, no
audio) and one ffprobe call records the clip's facts. Every row ends with `status` "ok" or a reason of
the taxonomy in vmae.media, and its `error` message.

Resumable: the rows are split into fixed units; each unit writes OUT/.units/unit-NNNNNN.parquet when it
is done, and a rerun skips ok rows and recorded failures (unless retried). A clip file already in
OUT/clips is adopted instead of fetched again (once it probes complete), so even a unit killed half way
loses no download. OUT/manifest.parquet and OUT/report.json are written last, once every unit is done, with
OUT/train.csv, val.csv (and test.csv) for the official code: its fine-tune list format, `path label_id` per
line, holding the real clip path of every labelled ok row and nothing else (given a missing file, the
reference silently trains on a random other video instead).

One folder, one job: OUT/download.json records the rows (keys and times) and the clip options; a run with
other rows or options is refused. Processes may share a folder (Slurm slices, or the same command started
twice): each unit is run under its lock file (vmae.lock), and a unit another live process holds is left to
it. A full or read-only OUT stops the run (vmae.errors.OutputError); every other fault is one row's status.
"""
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Optional

import pandas as pd

from vmae import jobs, media
from vmae.atomic import make_folder, remove_temporaries, write_text
from vmae.config import apply_off, option
from vmae.curation.templates import (CVDF_TEMPLATE, TEMPLATE_FIELDS, cell, check_url, file_in, fill_template,
                                     template_fields)
from vmae.errors import ConfigError, OutputError, is_output_fault_text, row_error
from vmae.executors import ExecutorConfig, my_slice, run_units
from vmae.lock import Lock, clear_stale, describe
from vmae.manifests import manifest_base, read_manifest, resolve_path, validate, write_manifest
from vmae.manifests.errors import ManifestError
from vmae.manifests.validate import write_rejects

log = logging.getLogger(__name__)

YOUTUBE_TEMPLATE = "https://www.youtube.com/watch?v={video_id}"
# Video only (the clips carry no audio), at most 720 lines: enough for any short-side resize we use.
DEFAULT_FORMAT = "bv*[height<=720]/b[height<=720]/bv*/b"
_RETRIED = (media.RATE_LIMITED, media.NETWORK)
JOB_FILE = "download.json"


@dataclass(frozen=True)
class DownloadConfig:
    """The options of a download; a field with help is also an option of `vmae-data download` (vmae.config)."""
    OFF: ClassVar[dict] = {"short_side": 0}  # command-line value -> None (keep the size)

    url_template: str = option(YOUTUBE_TEMPLATE, "URL for rows without a url; fields {video_id} {key} {source} "
                                                 "{split} {start} {end}.")
    from_dir: Optional[str] = option(None, "Adopt local clips (e.g. a CVDF Kinetics mirror) instead of downloading; "
                                           "missing ones get status missing-file.", path="existing-folder")
    from_template: str = option(CVDF_TEMPLATE, "File name inside --from-dir. With {start}/{end} the file is the clip "
                                               "itself; without, [start_sec, end_sec) is cut from it.")
    short_side: Optional[int] = option(320, "Resize so the short side is at most this many pixels (never upscales).")
    gop: int = option(media.DEFAULT_GOP, "Keyframe interval of the cut clips, in frames.")
    crf: int = media.DEFAULT_CRF
    preset: str = media.DEFAULT_PRESET
    threads: Optional[int] = None          # ffmpeg threads per clip; None: cores / workers
    retry_failed: Optional[tuple] = None   # None: keep recorded failures; (): retry all; else these reasons
    cookies: Optional[str] = option(None, "Cookies file passed to yt-dlp.", path="existing")
    sleep: float = option(0.0, "Seconds between two requests of a worker.")
    tries: int = option(5, "Attempts per row on rate-limited/network errors.")
    backoff: float = option(10.0, "First wait after a rate-limited answer, in seconds, doubled at each of --tries "
                                  "attempts.")
    socket_timeout: float = 30.0
    format: str = DEFAULT_FORMAT
    rows_per_unit: int = option(256, "Rows per unit of work (and per resume file); keep it the same across reruns.")
    min_fraction: float = 0.5              # a clip under this share of the requested seconds is too short
    min_frames: int = 16                   # ... and so is one under this many frames (one model input)

    def clip_settings(self) -> dict:
        """The options that decide what a clip holds; a rerun into the same folder must match them."""
        return {k: getattr(self, k) for k in ("short_side", "gop", "crf", "preset", "min_fraction", "min_frames")}

    def __post_init__(self):
        apply_off(self)
        if self.rows_per_unit < 1:
            raise ConfigError("--rows-per-unit must be at least 1")
        if self.tries < 1:
            raise ConfigError("tries must be at least 1")
        if self.sleep < 0 or self.backoff < 0:
            raise ConfigError("--sleep and the back-off must not be negative")
        bad = [r for r in self.retry_failed or () if r not in media.REASONS]
        if bad:
            raise ConfigError(f"unknown failure reason(s) {bad} for --retry-failed; choose from {media.REASONS}")
        for name, template in (("--url-template", self.url_template), ("--from-template", self.from_template)):
            unknown = template_fields(template) - set(TEMPLATE_FIELDS)
            if unknown:
                raise ConfigError(f"{name} {template!r} uses unknown field(s) {sorted(unknown)}; "
                                 f"available: {', '.join(TEMPLATE_FIELDS)}")


@dataclass(frozen=True)
class Unit:
    index: int
    out: str
    rows: tuple          # row dicts: earlier results for finished rows, input rows for the rest
    todo: tuple          # positions in rows to process
    cfg: DownloadConfig
    seen: Optional[int] = None  # mtime of the unit's result file when planned (None: there was none)


@dataclass
class DownloadReport:
    rows: int
    units: int
    units_run: int = 0
    units_skipped: int = 0
    units_busy: int = 0                            # held by another live process (see vmae.lock)
    processed: int = 0
    fetched: int = 0
    rejected: int = 0
    counts: dict = field(default_factory=dict)     # status -> rows, over the whole manifest once merged
    manifest: Optional[str] = None                 # None while units of other slices are missing
    lists: dict = field(default_factory=dict)      # OUT/{split}.csv -> lines (labelled ok rows)
    seconds: float = 0.0

    def lines(self) -> list:
        out = [f"download: {self.rows} rows in {self.units} units; ran {self.units_run}, "
               f"skipped {self.units_skipped} already done; processed {self.processed} rows, "
               f"fetched {self.fetched} from the network in {self.seconds:.1f}s"]
        if self.rejected:
            out.append(f"  {self.rejected} invalid rows rejected (see manifest.rejects.csv)")
        for status, n in sorted(self.counts.items(), key=lambda kv: (kv[0] != media.STATUS_OK, -kv[1])):
            out.append(f"  {status:<13} {n}")
        if self.units_busy:
            out.append(f"  {self.units_busy} units are being run by another process into this folder; the "
                       "process that finishes the last unit writes the manifest (or rerun this command then)")
        if self.manifest:
            out.append(f"manifest: {self.manifest}")
            out += [f"list for the official code: {path} ({n} clips)" for path, n in self.lists.items()]
        else:
            out.append("manifest not written yet: other units are not done (run the remaining --unit-index "
                       "slices, or rerun without --unit-index to finish and merge)")
        return out


# ---------------------------------------------------------------- pure helpers

def clip_path(out, key: str) -> Path:
    """OUT/clips/xx/KEY.mp4: 256 folders keep directories small at a million clips."""
    return Path(out) / "clips" / hashlib.md5(key.encode()).hexdigest()[:2] / f"{key}.mp4"


def unit_path(out, index: int) -> Path:
    return Path(out) / ".units" / f"unit-{index:06d}.parquet"


def plan_units(n_rows: int, rows_per_unit: int) -> list:
    """Deterministic row ranges [start, stop) of each unit."""
    return [(s, min(s + rows_per_unit, n_rows)) for s in range(0, n_rows, rows_per_unit)]


def needs_work(result: Optional[dict], retry_failed: Optional[tuple]) -> bool:
    """Whether a row with this earlier result (None: never processed) must be processed now."""
    if result is None or result.get("status") is None:
        return True
    if result["status"] == media.STATUS_OK:
        return not (result.get("path") and os.path.exists(result["path"]))
    return retry_failed is not None and (not retry_failed or result["status"] in retry_failed)


def locate(row: dict, cfg: DownloadConfig):
    """Where a row's video comes from: ("file", path, whole) or ("url", url, False).

    whole=True means the file already is the clip (a mirror named with start/end), so nothing is cut
    out of it; otherwise [start_sec, end_sec) or the frame range is cut from the source.
    """
    if cfg.from_dir:
        whole = bool(template_fields(cfg.from_template) & {"start", "end", "start_sec", "end_sec"})
        return "file", file_in(cfg.from_dir, cfg.from_template, row), whole
    if row.get("path"):
        return "file", Path(row["path"]), False
    if row.get("url"):
        return "url", check_url(row["url"]), False
    if not row.get("video_id"):
        raise media.MediaError(media.UNKNOWN, "row has no path, url or video_id to fetch the video from")
    return "url", check_url(fill_template(cfg.url_template, row)), False


def shortfall(facts: dict, row: dict, cfg: DownloadConfig) -> Optional[str]:
    """Why a cut clip is too short, or None. Frame-range rows need every frame; time rows need
    min_fraction of the requested seconds; every clip needs min_frames frames."""
    num_frames = cell(row.get("num_frames"))
    if num_frames is not None and facts["frames"] < num_frames:
        return f"{facts['frames']} frames of the {num_frames} requested"
    start, end = cell(row.get("start_sec")), cell(row.get("end_sec"))
    # A whole mirror file stands for [start_sec, end_sec) too: it must be about as long.
    if start is not None and end is not None:
        wanted = end - start
        if (facts["duration"] or 0) < cfg.min_fraction * wanted:
            return (f"{facts['duration'] or 0:.2f}s of the {wanted:.2f}s requested "
                    f"(at least {cfg.min_fraction:.0%} needed)")
    if facts["frames"] < cfg.min_frames:
        return f"{facts['frames']} frames (at least {cfg.min_frames} needed)"
    return None


# ---------------------------------------------------------------- side effects

class _Logger:
    """yt-dlp's messages go to our log at debug level; errors come back as exceptions."""

    def debug(self, msg):
        log.debug(msg)

    info = warning = error = debug


def fetch(url: str, folder: Path, cfg: DownloadConfig) -> Path:
    """Download url with yt-dlp into folder, backing off on rate limits. Raises MediaError."""
    import yt_dlp

    opts = {"quiet": True, "no_warnings": True, "noprogress": True, "logger": _Logger(),
            "outtmpl": str(folder / "source.%(ext)s"), "format": cfg.format, "noplaylist": True,
            "playlist_items": "1", "retries": 2, "fragment_retries": 2, "socket_timeout": cfg.socket_timeout,
            "overwrites": True, "cachedir": False, "cookiefile": cfg.cookies}
    for attempt in range(cfg.tries):
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=True)
            break
        except yt_dlp.utils.YoutubeDLError as e:
            if is_output_fault_text(str(e)):
                raise OutputError.at(folder, str(e).removeprefix("ERROR: ")) from None
            exc_info = getattr(e, "exc_info", None)  # only DownloadError carries the cause
            cause = exc_info[1] if exc_info else None
            reason = media.download_reason(str(e), getattr(cause, "status", None))
            if reason not in _RETRIED or attempt == cfg.tries - 1:
                raise media.MediaError(reason, f"{url}: {str(e).removeprefix('ERROR: ')}") from None
            wait = cfg.backoff * 2 ** attempt
            log.info("%s: %s, retrying in %.1fs", url, reason, wait)
            time.sleep(wait)
    files = [Path(d["filepath"]) for d in (info or {}).get("requested_downloads") or [] if d.get("filepath")]
    files = [f for f in files if f.exists()] or sorted(folder.glob("source.*"))
    if not files:
        raise media.MediaError(media.NOT_A_VIDEO, f"{url}: yt-dlp finished but wrote no file")
    return files[0]


def process_row(row: dict, out: Path, cfg: DownloadConfig, state: dict) -> dict:
    """Bring one row to a final status; return the row with path, probe facts, status and error set.

    Any fault of the row (its values, its source, the network) becomes its status and message; only a full
    or read-only OUT raises (OutputError). state carries the worker's time of its last request (for
    --sleep) and its fetch count.
    """
    clip = clip_path(out, row["key"])
    # A row of this folder's own output manifest has its clip as path: its source is its url or video_id.
    source = dict(row, path=None) if row.get("path") == str(clip) else row
    row = dict(row, fps=None, frames=None, width=None, height=None, duration=None, codec=None, status=None,
               error=None)
    tmp = out / ".tmp" / row["key"]
    try:
        remove_temporaries(clip)  # partial clips of a killed run; this unit's lock is held
        shutil.rmtree(tmp, ignore_errors=True)
        kind, where, whole = locate(source, cfg)
        # A clip already there was cut by an earlier run that stopped before recording its unit.
        facts = adopt(clip, row, cfg)
        if facts is None:
            if kind == "file":
                if not Path(where).is_file():
                    raise media.MediaError(media.MISSING_FILE, f"{where} does not exist" + (
                        "; rerun without --from-dir and with --retry-failed missing-file to download it"
                        if cfg.from_dir else ""))
                src = Path(where)
            else:
                wait = state["last_request"] + cfg.sleep - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                state["last_request"] = time.monotonic()
                state["fetched"] += 1
                make_folder(tmp)
                src = fetch(where, tmp, cfg)
            try:
                _cut(src, clip, row, whole, cfg)
            except media.MediaError as e:  # name the URL, not the temporary file that is about to go
                raise media.MediaError(e.reason, e.message.replace(str(src), str(where))) from None
            facts = media.probe(clip)
            problem = shortfall(facts, row, cfg)
            if problem:
                clip.unlink()
                raise media.MediaError(media.TOO_SHORT, f"{row['key']}: the clip has {problem}")
        row.update(facts, path=str(clip), status=media.STATUS_OK)
    except media.MediaError as e:
        row.update(status=e.reason, error=e.message)
    except Exception as e:  # one bad row is one bad row, unless the output is full or read-only (row_error)
        log.debug("row %s failed", row["key"], exc_info=True)
        row.update(status=media.UNKNOWN, error=row_error(e, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def adopt(clip: Path, row: dict, cfg: DownloadConfig) -> Optional[dict]:
    """The probe facts of a clip an earlier run left under its final name, when it is complete for this row;
    else None, and a clip that does not open or falls short is removed to be cut again."""
    if not clip.exists():
        return None
    try:
        facts = media.probe(clip)
    except media.MediaError:
        facts = None
    if facts is None or shortfall(facts, row, cfg):
        clip.unlink(missing_ok=True)
        return None
    return facts


def _cut(src: Path, clip: Path, row: dict, whole: bool, cfg: DownloadConfig) -> None:
    start_frame, num_frames = cell(row.get("start_frame")), cell(row.get("num_frames"))
    frame_mode = not whole and start_frame is not None and num_frames is not None
    media.cut(src, clip, start_sec=None if whole or frame_mode else cell(row.get("start_sec")),
              end_sec=None if whole or frame_mode else cell(row.get("end_sec")),
              start_frame=int(start_frame) if frame_mode else None,
              num_frames=int(num_frames) if frame_mode else None,
              short_side=cfg.short_side, gop=cfg.gop, threads=cfg.threads, crf=cfg.crf, preset=cfg.preset)


def write_lists(manifest: pd.DataFrame, out: Path) -> dict:
    """OUT/{split}.csv for train, val and test: the reference's fine-tune lists (`path label_id`, one space, no
    header) of the rows that are ok and labelled. Returns {path: lines} of the lists written."""
    if not {"split", "label_id", "status", "path"} <= set(manifest.columns):
        return {}
    usable = manifest[(manifest["status"] == media.STATUS_OK) & manifest["label_id"].notna()]
    lists = {}
    for split in ("train", "val", "test"):
        rows = usable[usable["split"] == split]
        if len(rows):
            spaced = rows["path"].str.contains(r"\s", regex=True)
            if spaced.any():
                log.warning("%s.csv: %d clip paths contain spaces, which the reference's list reader splits on "
                            "(e.g. %s); move OUT to a path without spaces", split, spaced.sum(),
                            rows["path"][spaced].iloc[0])
            lines = [f"{path} {int(label)}\n" for path, label in zip(rows["path"], rows["label_id"])]
            write_text(out / f"{split}.csv", "".join(lines))
            lists[str(out / f"{split}.csv")] = len(lines)
    return lists


def run_unit(unit: Unit) -> dict:
    """Process a unit's pending rows under its lock and write its result file (the unit's done-marker).
    A unit that another live process holds, or finished since it was planned, is left as it is."""
    out = Path(unit.out)
    lock = Lock(unit_path(out, unit.index).with_suffix(".lock"))
    if not lock.acquire():
        return {"busy": describe(lock.path, lock.owner)}
    try:
        if _mtime(unit_path(out, unit.index)) != unit.seen:
            return {"busy": None}  # another process finished it meanwhile
        rows = list(unit.rows)
        state = {"last_request": float("-inf"), "fetched": 0}
        for i in unit.todo:
            rows[i] = process_row(rows[i], out, unit.cfg, state)
        write_manifest(pd.DataFrame(rows), unit_path(out, unit.index))
    finally:
        lock.release()
    return {"counts": Counter(rows[i]["status"] for i in unit.todo), "fetched": state["fetched"]}


def _mtime(path: Path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def _earlier_results(out: Path):
    """(key -> row, key -> unit file name) over every unit file an earlier run (or another slice) wrote.
    Read oldest first, so that after a change of --rows-per-unit the newest result of a key wins."""
    rows, origin = {}, {}
    for f in sorted((out / ".units").glob("unit-*.parquet"), key=lambda f: f.stat().st_mtime):
        for r in read_manifest(f).to_dict("records"):
            rows[r["key"]], origin[r["key"]] = r, f.name
    return rows, origin


def job_record(rows: list, cfg: DownloadConfig) -> dict:
    """What a download folder holds: its rows (keys and times) and the clip options."""
    spec = sorted((r["key"], cell(r.get("start_sec")), cell(r.get("end_sec")), cell(r.get("start_frame")),
                   cell(r.get("num_frames"))) for r in rows)
    return {"rows": len(rows), "rows_digest": jobs.digest(spec), "clips": cfg.clip_settings()}


def download(manifest, out, cfg: DownloadConfig = DownloadConfig(), executor: ExecutorConfig = ExecutorConfig(),
             progress: bool = True) -> DownloadReport:
    """Fetch, cut and probe every row of `manifest` (a path or DataFrame) into folder `out`.

    Relative `path` values start from the manifest's folder (the current folder for a DataFrame)."""
    from tqdm import tqdm

    started = time.monotonic()
    out = Path(out).resolve()
    df = read_manifest(manifest) if not isinstance(manifest, pd.DataFrame) else manifest
    df, rejects = validate(df, manifest if not isinstance(manifest, pd.DataFrame) else None)
    if len(df) == 0:
        raise ManifestError("no valid rows to download", manifest if isinstance(manifest, (str, Path)) else None)
    if cfg.from_dir and not Path(cfg.from_dir).is_dir():
        raise ConfigError(f"--from-dir {cfg.from_dir} is not a folder")
    if cfg.threads is None:
        cfg = replace(cfg, threads=media.default_threads(executor.workers))
    base = manifest_base(manifest)
    rows = [dict(r, path=resolve_path(r["path"], base) if isinstance(r.get("path"), str) else r.get("path"))
            for r in df.to_dict("records")]
    make_folder(out)
    jobs.claim(out / JOB_FILE, job_record(rows, cfg), "download")
    write_rejects(rejects, out / "manifest.parquet")

    earlier, origin = _earlier_results(out)
    file_rows = Counter(origin.values())
    plan = plan_units(len(rows), cfg.rows_per_unit)
    report = DownloadReport(rows=len(rows), units=len(plan), rejected=len(rejects))
    units = []
    for index in my_slice(range(len(plan)), executor):
        start, stop = plan[index]
        pending = [needs_work(earlier.get(r["key"]), cfg.retry_failed) for r in rows[start:stop]]
        # Pending rows start again from the input row (its own path or url), the others keep their result.
        mine = [r if p else earlier[r["key"]] for r, p in zip(rows[start:stop], pending)]
        todo = tuple(i for i, p in enumerate(pending) if p)
        name = unit_path(out, index).name
        # Done only if this unit's file holds exactly these rows (the partition may have changed since).
        if not todo and file_rows[name] == len(mine) and all(origin[r["key"]] == name for r in mine):
            report.units_skipped += 1
            continue
        units.append(Unit(index, str(out), tuple(mine), todo, cfg, _mtime(unit_path(out, index))))

    ok = failed = 0
    bar = tqdm(total=sum(len(u.todo) for u in units), unit="clip", desc="download", disable=not progress,
               dynamic_ncols=True)
    # The slice is taken above, over all units, so that every slice gets the same units on a rerun.
    for unit, result in run_units(run_unit, units, replace(executor, unit_index=None, num_units=None)):
        bar.update(len(unit.todo))
        if "busy" in result:
            report.units_busy += result["busy"] is not None
            report.units_skipped += result["busy"] is None
            continue
        report.units_run += 1
        report.processed += len(unit.todo)
        report.fetched += result["fetched"]
        ok += result["counts"].get(media.STATUS_OK, 0)
        failed += len(unit.todo) - result["counts"].get(media.STATUS_OK, 0)
        bar.set_postfix(ok=ok, failed=failed, refresh=False)
    bar.close()

    if all(unit_path(out, i).exists() for i in range(len(plan))):
        clear_stale((out / ".units").glob("unit-*.lock"))  # of units that killed runs finished
        merged = pd.concat([read_manifest(unit_path(out, i)) for i in range(len(plan))], ignore_index=True)
        report.counts = dict(Counter(merged["status"]))
        report.manifest = str(write_manifest(merged, out / "manifest.parquet"))
        report.lists = write_lists(merged, out)
    report.seconds = time.monotonic() - started
    if report.manifest:
        write_text(out / "report.json", json.dumps(report.__dict__, indent=2) + "\n")
    return report
