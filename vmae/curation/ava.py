"""AVA for UnlabeledHybrid: the 15th to 30th minute of every trainval movie, cut into consecutive
300-frame clips at 30 fps (90 per movie), frame-exact, with no gaps or overlaps.

Each movie is first resampled to a constant `fps`; clip k of a movie holds frames
[s0 + k*clip_frames, s0 + (k+1)*clip_frames) of that resampled movie, where s0 = window_start * fps.
One movie is one work unit (local pool, Ray or a Slurm slice). A unit writes its clips atomically and
then its part of the manifest (parts/MOVIE.parquet); the manifest is assembled from all parts present,
so slices and reruns add up. Clips are written atomically, so a clip under its final name is complete: a
rerun keeps every clip whose header has the right frame count (no full decode) and cuts the rest.
A movie is cut under its lock file (vmae.lock), so processes sharing the folder never cut the same movie;
the folder's clip settings are recorded (ava-settings.json) and a run with others is refused.
"""
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from vmae.atomic import make_folder, remove_temporaries
from vmae.config import option
from vmae.errors import row_error
from vmae.executors import ExecutorConfig, my_slice, run_units
from vmae.jobs import claim
from vmae.lock import Lock, clear_stale, describe
from vmae.manifests import ManifestError, empty_manifest, make_key, read_manifest, write_manifest
from vmae.media import MISSING_FILE, TOO_SHORT, UNKNOWN, MediaError, cut, default_threads, probe

SOURCE = "ava"
SETTINGS_FILE = "ava-settings.json"
IN_USE = "in-use"     # MovieResult.status of a movie another live process is cutting


@dataclass(frozen=True)
class AvaConfig:
    """How movies are cut; each field is also an option of `vmae-data ava` (vmae.config)."""
    window_start: float = option(900.0, "Window start, seconds (the 15th minute).")
    window_end: float = option(1800.0, "Window end, seconds (the 30th minute).")
    clip_frames: int = option(300, "Frames per clip.")
    fps: float = option(30.0, "Movies are resampled to this constant rate.")
    short_side: int | None = option(None, "Resize clips so the short side is at most this many pixels.",
                                    unset="the movie's size")
    stride: int = option(4, "Temporal sampling stride written to the manifest (the clips do not change).")

    def __post_init__(self):
        if not 0 <= self.window_start < self.window_end:
            raise ManifestError(f"the window {self.window_start}..{self.window_end} s is empty; "
                                "pass --window-start below --window-end")
        if self.clip_frames < 1 or self.fps <= 0:
            raise ManifestError("--clip-frames and --fps must be positive")
        if self.clips_per_movie < 1:
            raise ManifestError(f"the window holds {self.window_frames} frames at {self.fps} fps, fewer than "
                                f"one clip of {self.clip_frames}; widen the window or shorten --clip-frames")

    @property
    def first_frame(self) -> int:
        return round(self.window_start * self.fps)

    @property
    def window_frames(self) -> int:
        return round(self.window_end * self.fps) - self.first_frame

    @property
    def clips_per_movie(self) -> int:
        return self.window_frames // self.clip_frames

    def clip_settings(self) -> dict:
        """The options that decide what a clip holds; a rerun into the same folder must match them."""
        return {k: v for k, v in asdict(self).items() if k != "stride"}


@dataclass(frozen=True)
class MovieJob:
    movie: str            # the name in the file list, e.g. -5KQ66BBWC4.mkv
    src: str | None       # the movie file found for it, or None
    out: str
    cfg: AvaConfig
    threads: int | None = None


@dataclass(frozen=True)
class MovieResult:
    movie: str
    duration: float | None
    planned: int
    ok: int
    reused: int
    status: str           # ok, or why clips are missing (missing-file, too-short, decode-error, ...)
    error: str | None = None


@dataclass(frozen=True)
class AvaReport:
    out: str
    manifest: str
    movies: int                       # in the file list
    ran: tuple                        # MovieResult per movie this process ran
    clips_ok: int                     # in the whole manifest
    clips_planned: int
    pending: int                      # movies with no manifest part yet (other slices still to run)
    notes: tuple = field(default_factory=tuple)

    def lines(self) -> list:
        cut_now = sum(r.ok - r.reused for r in self.ran)
        out = [f"ava: {self.movies} movies, {self.clips_ok} of {self.clips_planned} clips ok -> {self.manifest}",
               f"  this run: {len(self.ran)} movies, {cut_now} clips cut, {sum(r.reused for r in self.ran)} "
               "already there"]
        for r in sorted(self.ran, key=lambda r: r.movie):
            if r.status not in ("ok", IN_USE):
                length = f"{r.duration:.1f} s long, " if r.duration is not None else ""
                out.append(f"  {r.movie}: {r.status}: {length}cut {r.ok} of {r.planned} clips"
                           + (f" ({r.error})" if r.error else ""))
        for r in self.ran:
            if r.status == IN_USE:
                out.append(f"  {r.movie}: left to another process: {r.error}")
        if self.pending:
            out.append(f"  {self.pending} movies not processed yet (other --unit-index slices or processes); "
                       "the manifest lists the movies done so far")
        out += [f"  {n}" for n in self.notes]
        return out


def clip_key(movie_id: str, index: int) -> str:
    return make_key(SOURCE, movie_id, f"{index:03d}")


def read_file_list(path) -> list:
    """Movie file names from the AVA list (one per line, like -5KQ66BBWC4.mkv); duplicates kept once."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file list not found; pass ava_file_names_trainval_v2.1.txt")
    names = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if "/" in name or name in (".", ".."):
            raise ManifestError(f"{name!r} is not a file name; the list holds one movie file name per line",
                                path, f"line {n}")
        if name not in names:
            names.append(name)
    if not names:
        raise ManifestError("the file list is empty", path)
    return names


def plan_clips(movie: str, cfg: AvaConfig) -> list:
    """The clip rows of one movie, before cutting: key, window position, frames."""
    movie_id = Path(movie).stem
    rows = []
    for k in range(cfg.clips_per_movie):
        start = cfg.first_frame + k * cfg.clip_frames
        rows.append({"key": clip_key(movie_id, k), "source": SOURCE, "video_id": movie_id,
                     "start_frame": start, "num_frames": cfg.clip_frames, "start_sec": start / cfg.fps,
                     "end_sec": (start + cfg.clip_frames) / cfg.fps, "split": "train",
                     "stride": cfg.stride})
    return rows


def clips_that_fit(duration: float, cfg: AvaConfig) -> int:
    """How many planned clips lie wholly inside a movie of `duration` seconds."""
    available = math.floor(duration * cfg.fps + 1e-6) - cfg.first_frame
    return max(0, min(cfg.clips_per_movie, available // cfg.clip_frames))


def cut_movie(job: MovieJob) -> MovieResult:
    """Cut one movie's clips under its lock (keeping valid ones from an earlier run); write its manifest
    part. Every planned clip gets a manifest row, with status ok or the reason it is not there."""
    part = Path(job.out) / "parts" / f"{make_key(Path(job.movie).stem)}.parquet"
    lock = Lock(part.with_suffix(".lock"))
    if not lock.acquire():
        return MovieResult(movie=job.movie, duration=None, planned=job.cfg.clips_per_movie, ok=0, reused=0,
                           status=IN_USE, error=describe(lock.path, lock.owner))
    try:
        return _cut_movie(job, part)
    finally:
        lock.release()


def _cut_movie(job: MovieJob, part: Path) -> MovieResult:
    cfg, out = job.cfg, Path(job.out)
    rows = plan_clips(job.movie, cfg)
    duration, movie_status, movie_error = None, "ok", None
    if job.src is None:
        movie_status, movie_error = MISSING_FILE, f"no file for {job.movie} in the videos folder"
        fit = 0
    else:
        try:
            duration = probe(job.src)["duration"]
            fit = clips_that_fit(duration or 0.0, cfg)
        except MediaError as e:
            movie_status, movie_error, fit = e.reason, e.message, 0
    reused = 0
    # Partial clips of a killed run, all of this movie's in one listing; this movie's lock is held.
    remove_temporaries(*(out / "clips" / f"{row['key']}.mp4" for row in rows[:fit]))
    for k, row in enumerate(rows):
        dst = out / "clips" / f"{row['key']}.mp4"
        if k >= fit:
            row["status"] = movie_status if movie_status != "ok" else TOO_SHORT
            row["error"] = movie_error or (f"{job.movie} is {duration or 0:.2f} s long; this clip ends at "
                                           f"{row['end_sec']:.2f} s")
            continue
        facts, status, error = _valid_clip(dst, cfg.clip_frames), "ok", None
        if facts is not None:
            reused += 1
        else:
            facts, status, error = _cut_clip(job, row, dst)
        row.update(facts, path=str(dst) if status == "ok" else None, status=status, error=error)
    ok = sum(r.get("status") == "ok" for r in rows)
    if movie_status == "ok" and ok < len(rows):
        failed = next(r for r in rows if r.get("status") != "ok")
        movie_status, movie_error = failed["status"], failed["error"]
    write_manifest(pd.DataFrame(rows), part)
    return MovieResult(movie=job.movie, duration=duration, planned=len(rows), ok=ok, reused=reused,
                       status=movie_status, error=None if movie_status == TOO_SHORT else movie_error)


def cut_ava(file_list, videos, out, cfg: AvaConfig = AvaConfig(),
            executor: ExecutorConfig = ExecutorConfig()) -> AvaReport:
    """Cut every movie of the file list found in `videos` into `out`/clips and write `out`/manifest.parquet."""
    videos, out = Path(videos).resolve(), Path(out).resolve()
    if not videos.is_dir():
        raise FileNotFoundError(f"{videos}: videos folder not found; pass --videos with the AVA movies")
    movies = read_file_list(file_list)
    make_folder(out)
    claim(out / SETTINGS_FILE, cfg.clip_settings(), "AVA clips")
    files = _movie_files(videos)
    notes = []
    threads = default_threads(executor.workers) if executor.executor == "local" else None
    jobs = []
    for movie in movies:
        src = files.get(movie) or files.get(Path(movie).stem)
        if src is not None and Path(src).name != movie:
            notes.append(f"{movie}: using {Path(src).name} (same name, other extension)")
        jobs.append(MovieJob(movie=movie, src=src, out=str(out), cfg=cfg, threads=threads))
    ran = []
    bar = tqdm(run_units(cut_movie, jobs, executor), total=len(my_slice(jobs, executor)), unit="movie",
               desc="ava", disable=None)
    for _, result in bar:
        ran.append(result)
        bar.set_postfix(clips=sum(r.ok for r in ran))
    manifest, pending = _assemble(out, movies)
    return AvaReport(out=str(out), manifest=str(manifest), movies=len(movies), ran=tuple(ran),
                     clips_ok=int((read_manifest(manifest)["status"] == "ok").sum()),
                     clips_planned=len(movies) * cfg.clips_per_movie, pending=pending, notes=tuple(notes))


def _cut_clip(job: MovieJob, row: dict, dst: Path):
    """Cut one clip and check it -> (probe facts, status, error). Only a full or read-only output raises."""
    cfg = job.cfg
    try:
        cut(job.src, dst, start_frame=row["start_frame"], num_frames=cfg.clip_frames, fps=cfg.fps,
            short_side=cfg.short_side, threads=job.threads)
        facts = probe(dst)
    except MediaError as e:
        return {}, e.reason, e.message
    except Exception as e:  # one bad clip is one bad clip, unless the output is full or read-only
        return {}, UNKNOWN, row_error(e, dst.parent)
    if facts["frames"] != cfg.clip_frames:
        dst.unlink()  # a partial clip would pass for a finished one on the next run
        return {}, TOO_SHORT, f"{job.movie} gave {facts['frames']} of {cfg.clip_frames} frames for this clip"
    return facts, "ok", None


def _valid_clip(path: Path, frames: int):
    """Probe facts of an existing clip with the right frame count, else None."""
    if not path.exists():
        return None
    try:
        facts = probe(path)
    except MediaError:
        return None
    return facts if facts["frames"] == frames else None


def _movie_files(videos: Path) -> dict:
    """File name -> path and, for a unique stem, stem -> path (a movie saved with another extension)."""
    names = sorted(e.name for e in os.scandir(videos) if e.is_file() and not e.name.startswith("."))
    files = {n: str(videos / n) for n in names}
    stems = {}
    for n in names:
        stems.setdefault(Path(n).stem, []).append(n)
    files.update({s: str(videos / ns[0]) for s, ns in stems.items() if len(ns) == 1 and s not in files})
    return files


def _assemble(out: Path, movies: list):
    """manifest.parquet from every movie part present, in file-list order -> (path, movies without a part)."""
    clear_stale((out / "parts").glob("*.lock"))  # of movies that killed runs finished
    parts, pending = [], 0
    for movie in movies:
        part = out / "parts" / f"{make_key(Path(movie).stem)}.parquet"
        if part.exists():
            parts.append(read_manifest(part))
        else:
            pending += 1
    df = pd.concat(parts, ignore_index=True) if parts else empty_manifest()
    return write_manifest(df, out / "manifest.parquet"), pending
