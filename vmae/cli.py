"""The front door: click groups for `vmae-data` and `vmae-train`.

Each command checks its options, calls one library function and reports. Library modules are imported
inside the commands so that `--help` answers at once without loading torch or Ray.
"""
import functools

import click

from vmae.errors import VmaeError


def user_errors(fn):
    """Turn expected input errors into a clean message and exit code 1 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (VmaeError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def data():
    """vmae-data: build VideoMAE V2 training data from public video datasets.

    \b
    Typical flow:
      vmae-data build-k710 --k400 K400 --k600 K600 --k700 K700 --out k710/
      vmae-data download k710/train.parquet --out clips/ --from-dir /mirror/k400
      vmae-data mix unlabeled-hybrid --k710 clips/manifest.parquet ... --out hybrid.parquet
      vmae-data shard unlabeled-hybrid --manifest hybrid.parquet --out shards/
    """


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def train():
    """vmae-train: train VideoMAE V2 straight from WebDataset shards.

    \b
    Typical flow:
      vmae-train pretrain --shards 'shards/uh-{000000..000099}.tar' --output-dir runs/pt
      vmae-train finetune --shards 'k710/train-{000000..000009}.tar' --init runs/pt/checkpoint-00300000.pth ...
      vmae-train eval --shards 'k710/val-{000000..000001}.tar' --checkpoint runs/ft/checkpoint-best.pth ...
    """


# ---------------------------------------------------------------- curation: build-k710

@data.command("build-k710")
@click.option("--k400", type=click.Path(path_type=str), metavar="DIR",
              help="Official K400 annotation folder (train.csv, val.csv, optional test.csv).")
@click.option("--k600", type=click.Path(path_type=str), metavar="DIR", help="Same for K600.")
@click.option("--k700", type=click.Path(path_type=str), metavar="DIR", help="Same for K700 (2020).")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="OUT",
              help="Output folder (created; its outputs are replaced only once the build has succeeded).")
@click.option("--label-aliases", type=click.Path(dir_okay=False), metavar="FILE.json",
              help='JSON object {"label in a CSV": "K710 name"} for labels the built-in rules do not place.')
@click.option("--on-unknown-label", type=click.Choice(["error", "drop"]), default="error", show_default=True,
              help="A label with no K710 class stops the build (error) or its rows are dropped and reported.")
@click.option("--path-template", default="{video_id}_{start:06d}_{end:06d}.mp4", show_default=True,
              metavar="TEMPLATE", help="Path of each clip in train.csv/val.csv; fields {video_id} {start} {end} "
              "{label} {label_id} {source} {split} {key}, Python format specs allowed; {label} is written with "
              "'_' for spaces.")
@user_errors
def build_k710_cmd(k400, k600, k700, out, label_aliases, on_unknown_label, path_template):
    """Merge the official Kinetics-400/600/700 annotation CSVs into Kinetics-710 ("LabeledHybrid"):
    train+val of every version, one row per YouTube ID, 710 classes.

    \b
      vmae-data build-k710 --k400 kinetics400/ --k600 kinetics600/ --k700 kinetics700_2020/ --out k710/

    A version or split that is absent is reported and skipped (a run on val files alone works).

    Labels: exact K710 name, then the official rename table, then the same ignoring case, spaces and
    underscores, then --label-aliases. Other labels stop the build with a list (label, file, rows) unless
    --on-unknown-label drop.

    Dedup rule: One row per YouTube ID survives across all versions and splits: a train row beats any val
    row (so a val video that is in any train list leaves val), then the newest version wins (K700 > K600 >
    K400), then the first row in its file. The survivor keeps its own segment and label. Videos also in a
    test file are reported (test leakage), not removed.

    Writes OUT/train.parquet, val.parquet (manifests), train.csv, val.csv (VideoMAE V2 lists: "path
    label_id"), labels.txt (the 710 names; label_id = line number from 0) and report.json (every count:
    duplicates by kind, val-in-train, label conflicts, unknown labels, test leakage, classes present).
    """
    from vmae.curation.kinetics import BuildK710Config, build_k710, format_summary, load_label_aliases

    aliases = load_label_aliases(label_aliases) if label_aliases else {}
    config = BuildK710Config(label_aliases=aliases, on_unknown_label=on_unknown_label, path_template=path_template)
    click.echo(format_summary(build_k710(k400, k600, k700, out, config)))


# ---------------------------------------------------------------- curation: ssv2, ava, sample, import, mix

def _executor(executor, workers, unit_index, num_units):
    from vmae.executors import ExecutorConfig
    try:
        return ExecutorConfig(executor=executor, workers=workers, unit_index=unit_index, num_units=num_units)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@data.command("ssv2")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Official annotation JSON, e.g. something-something-v2-train.json.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The 174-class label file (something-something-v2-labels.json).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the extracted videos, named ID.webm.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write (.parquet).")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Split of every row [default: from the annotation file name].")
@click.option("--ext", default="webm", show_default=True, help="Video file extension.")
@click.option("--probe", is_flag=True, help="Probe every video now (status ok / reason, probe facts); "
              "otherwise existing files keep an empty status until download --from-dir or shard checks them.")
@click.option("--workers", default=1, show_default=True, help="Parallel probes (with --probe).")
@user_errors
def ssv2(annotations, labels, videos, out, split, ext, probe, workers):
    """Something-Something V2 annotations -> a manifest of its .webm videos (stride 2, labels kept).

    Label = the template without brackets, label_id from the label file. Videos that are not in the
    folder stay in the manifest with status missing-file; unusable entries go to OUT.rejects.csv.

    \b
    Example:
      vmae-data ssv2 --annotations something-something-v2-train.json \\
        --labels something-something-v2-labels.json --videos 20bn-something-something-v2 --out ssv2.parquet
    """
    from vmae.curation.ssv2 import ssv2_manifest
    report = ssv2_manifest(annotations, labels, videos, out, split=split, ext=ext, probe=probe,
                           executor=_executor("local", workers, None, None))
    click.echo("\n".join(report.lines()))


@data.command("ava")
@click.option("--file-list", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ava_file_names_trainval_v2.1.txt: one movie file name per line.")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the downloaded movies (a listed name with another extension is accepted).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: clips/, parts/ and manifest.parquet.")
@click.option("--window-start", default=900.0, show_default=True, help="Window start, seconds.")
@click.option("--window-end", default=1800.0, show_default=True, help="Window end, seconds.")
@click.option("--clip-frames", default=300, show_default=True, help="Frames per clip.")
@click.option("--fps", default=30.0, show_default=True, help="Movies are resampled to this constant rate.")
@click.option("--short-side", type=int, help="Resize clips so the short side is at most this many pixels.")
@click.option("--stride", default=4, show_default=True, help="Temporal sampling stride written to the manifest.")
@click.option("--workers", default=1, show_default=True, help="Movies cut in parallel (local executor).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--unit-index", type=int, help="Run only this slice of the movies (Slurm array index) ...")
@click.option("--num-units", type=int, help="... out of this many slices.")
@user_errors
def ava(file_list, videos, out, window_start, window_end, clip_frames, fps, short_side, stride, workers,
        executor, unit_index, num_units):
    """Cut AVA movies (900 s to 1800 s) into consecutive 300-frame clips at 30 fps, frame-exact.

    90 clips per full movie, keys ava_MOVIE_000..089, no gaps or overlaps. Movies that are missing or too
    short are reported with the clips that could be cut; each planned clip has a manifest row with its
    status. A rerun keeps clips already cut (right frame count) and cuts the rest.

    \b
    Example:
      vmae-data ava --file-list ava_file_names_trainval_v2.1.txt --videos ava/movies --out ava/ --workers 8
    """
    from vmae.curation.ava import AvaConfig, cut_ava
    cfg = AvaConfig(window_start=window_start, window_end=window_end, clip_frames=clip_frames, fps=fps,
                    short_side=short_side, stride=stride)
    report = cut_ava(file_list, videos, out, cfg, _executor(executor, workers, unit_index, num_units))
    click.echo("\n".join(report.lines()))


@data.command("sample")
@click.argument("source", type=click.Choice(["webvid", "instagram"]))
@click.option("--metadata", required=True, type=click.Path(exists=True, dir_okay=False),
              help="WebVid: the metadata CSV (videoid, contentUrl, duration, ...). "
                   "Instagram: CSV/TSV/JSONL with id and url and/or path.")
@click.option("--n", "n", default=250_000, show_default=True, help="Rows to sample.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same sample, on any machine.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write (.parquet).")
@user_errors
def sample(source, metadata, n, seed, out):
    """A seeded random sample of N usable rows of a WebVid2M or Instagram list (stride 4, unlabeled).

    Rows without a URL, with a bad or non-positive duration, or with an id seen before are excluded
    before sampling and listed in OUT.rejects.csv. Asking for more rows than are usable is an error.

    \b
    Example:
      vmae-data sample webvid --metadata results_2M_train.csv --n 250000 --seed 0 --out webvid.parquet
    """
    from vmae.curation.sampling import sample_source
    click.echo("\n".join(sample_source(source, metadata, n, seed, out).lines()))


@data.command("import")
@click.argument("src", type=click.Path(exists=True))
@click.option("--source", required=True, help="Source name for the rows and their keys, e.g. ucf101.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write (.parquet).")
@click.option("--labels-from", type=click.Choice(["folders", "csv", "none"]),
              help="Class of each video [default: folders for a folder, csv for a list with a label column].")
@click.option("--stride", default=4, show_default=True, help="Temporal sampling stride of every row.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), help="Split of every row.")
@click.option("--root", type=click.Path(exists=True, file_okay=False),
              help="Folder that relative paths in a list start from [default: the list's folder].")
@click.option("--class-list", type=click.Path(exists=True, dir_okay=False),
              help="Fixed class list (one name per line, id = line from 0), e.g. the train import's "
                   "OUT.classes.txt when importing its test split.")
@click.option("--probe", is_flag=True, help="Probe every video now (status ok / reason, probe facts).")
@click.option("--workers", default=1, show_default=True, help="Parallel probes (with --probe).")
@user_errors
def import_(src, source, out, labels_from, stride, split, root, class_list, probe, workers):
    """Import your own videos: a folder tree (CLASS/VIDEO.ext) or a CSV/TSV of path[,label].

    Writes the manifest, its class list OUT.classes.txt (sorted names, label_id = line from 0) and, for
    unreadable rows, OUT.rejects.csv with line numbers. Missing files keep a row with status missing-file.

    \b
    Examples:
      vmae-data import UCF-101/ --source ucf101 --out ucf101.parquet
      vmae-data import test.csv --source mine --labels-from csv --class-list train.classes.txt --out test.parquet
    """
    from vmae.curation.importer import import_videos
    report = import_videos(src, source, out, labels_from=labels_from, stride=stride, split=split, root=root,
                           class_list=class_list, probe=probe, executor=_executor("local", workers, None, None))
    click.echo("\n".join(report.lines()))


@data.group("mix")
def mix():
    """Combine per-source manifests into a pretraining mixture."""


@mix.command("unlabeled-hybrid")
@click.option("--k710", type=click.Path(exists=True, dir_okay=False), help="K710 train manifest.")
@click.option("--ssv2", type=click.Path(exists=True, dir_okay=False), help="SSV2 train manifest.")
@click.option("--ava", type=click.Path(exists=True, dir_okay=False), help="AVA manifest (vmae-data ava).")
@click.option("--webvid", type=click.Path(exists=True, dir_okay=False), help="Sampled WebVid2M manifest.")
@click.option("--instagram", type=click.Path(exists=True, dir_okay=False), help="Sampled Instagram manifest.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Mixed manifest to write.")
@click.option("--stride", "strides", multiple=True, metavar="SOURCE=N",
              help="Override a source's stride (default 2 for ssv2, 4 otherwise); repeatable.")
@user_errors
def unlabeled_hybrid(k710, ssv2, ava, webvid, instagram, out, strides):
    """UnlabeledHybrid: concatenate the given manifests, set strides, drop duplicate keys, compare counts.

    Any source may be left out. Every row is kept whatever its status (shard takes the usable ones);
    a key already taken drops the later row (listed in OUT.rejects.csv). Prints clips per source next to
    the paper's Table 2 (K710 658k, SSv2 169k, AVA 21k, WebVid2M 250k, Instagram 250k; 1.35M).

    \b
    Example:
      vmae-data mix unlabeled-hybrid --k710 k710/train.parquet --ssv2 ssv2.parquet --ava ava/manifest.parquet \\
        --webvid webvid.parquet --instagram instagram.parquet --out hybrid.parquet
    """
    from vmae.curation.hybrid import mix_unlabeled_hybrid
    overrides = {}
    for item in strides:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise click.BadParameter(f"{item!r}: expected SOURCE=N, e.g. ssv2=2", param_hint="--stride")
        overrides[name] = int(value)
    inputs = {"k710": k710, "ssv2": ssv2, "ava": ava, "webvid": webvid, "instagram": instagram}
    click.echo("\n".join(mix_unlabeled_hybrid(inputs, out, overrides).lines()))


@data.command("download")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: clips/xx/KEY.mp4, manifest.parquet, report.json, .units/ (resume state).")
@click.option("--workers", default=1, show_default=True, help="Units run in parallel (local process pool); each runs its rows in turn.")
@click.option("--url-template", default="https://www.youtube.com/watch?v={video_id}", show_default=True,
              help="URL for rows without a url; fields {video_id} {key} {source} {split} {start} {end}.")
@click.option("--from-dir", type=click.Path(exists=True, file_okay=False),
              help="Adopt local clips (e.g. a CVDF Kinetics mirror) instead of downloading; missing ones "
                   "get status missing-file.")
@click.option("--from-template", default="{video_id}_{start:06d}_{end:06d}.mp4", show_default=True,
              help="File name inside --from-dir. With {start}/{end} the file is the clip itself; without, "
                   "[start_sec, end_sec) is cut from it.")
@click.option("--short-side", default=320, show_default=True,
              help="Resize so the short side is at most this many pixels (never upscales); 0 keeps the size.")
@click.option("--gop", default=16, show_default=True, help="Keyframe interval of the cut clips, in frames.")
@click.option("--retry-failed", is_flag=False, flag_value="all", default=None, metavar="[REASONS]",
              help="Retry rows that failed in an earlier run: all of them, or only the comma-separated "
                   "reasons given (e.g. rate-limited,network).")
@click.option("--cookies", type=click.Path(exists=True, dir_okay=False), help="Cookies file passed to yt-dlp.")
@click.option("--sleep", default=0.0, show_default=True, help="Seconds between two requests of a worker.")
@click.option("--backoff", default=10.0, show_default=True,
              help="First wait after a rate-limited answer, doubled at each of --tries attempts.")
@click.option("--tries", default=5, show_default=True, help="Attempts per row on rate-limited/network errors.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--unit-index", type=int, help="With --num-units: run only this slice (e.g. $SLURM_ARRAY_TASK_ID).")
@click.option("--num-units", type=int, help="Number of slices the units are split into.")
@click.option("--rows-per-unit", default=256, show_default=True,
              help="Rows per unit of work (and per resume file); keep it the same across reruns.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def download_cmd(manifest, out, workers, url_template, from_dir, from_template, short_side, gop, retry_failed,
                 cookies, sleep, backoff, tries, executor, unit_index, num_units, rows_per_unit, progress):
    """Fetch (yt-dlp) or adopt (--from-dir) every clip of MANIFEST, cut it frame-accurately to H.264 and
    record its probe facts and status.

    \b
    Kinetics from the CVDF mirror, then YouTube for what the mirror lacks:
      vmae-data download k710/train.parquet --out clips/ --from-dir /data/k400/train --workers 16
      vmae-data download clips/manifest.parquet --out clips/ --retry-failed missing-file --sleep 2

    A rerun skips finished rows and recorded failures (unless --retry-failed); nothing is fetched twice.
    """
    from vmae.curation.download import DownloadConfig, download
    from vmae.executors import ExecutorConfig

    retry = None if retry_failed is None else (
        () if retry_failed == "all" else tuple(r.strip() for r in retry_failed.split(",") if r.strip()))
    try:
        cfg = DownloadConfig(url_template=url_template, from_dir=from_dir, from_template=from_template,
                             short_side=short_side or None, gop=gop, retry_failed=retry, cookies=cookies,
                             sleep=sleep, backoff=backoff, tries=tries, rows_per_unit=rows_per_unit)
        ex = ExecutorConfig(executor=executor, workers=workers, unit_index=unit_index, num_units=num_units)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    report = download(manifest, out, cfg, ex, progress=progress)
    for line in report.lines():
        click.echo(line)


# ---------------------------------------------------------------- shards: shard, verify, stats (shards stream)

_SHARD_OPTIONS = [
    click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
                 help="Manifest of clips (Parquet, CSV or JSONL); relative paths are read from its folder."),
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Folder of the shard set (one set per folder)."),
    click.option("--max-size", default="1GB", show_default=True,
                 help="Size cap per shard: 1GB, 500MB, 2GiB; 0 for none. Exact without --transcode."),
    click.option("--max-count", default=10_000, show_default=True, type=click.IntRange(min=1),
                 help="Samples per shard at most."),
    click.option("--seed", default=0, show_default=True, help="Shuffle seed: same seed, same bytes."),
    click.option("--transcode", default="none", show_default=True, metavar="none|short-side=N,gop=G",
                 help="Re-encode every clip to H.264 with this short side (px) and keyframe interval (frames); "
                      "short-side=320 alone takes gop=16."),
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="local: a process pool of --workers; ray: Ray tasks (RAY_ADDRESS or a local Ray)."),
    click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
                 help="Shards written at once by the local pool (with --transcode: the number of cores)."),
    click.option("--unit-index", type=int, help="With --num-units: write only this slice of the shards "
                                                 "(e.g. $SLURM_ARRAY_TASK_ID)."),
    click.option("--num-units", type=int, help="Number of slices the shards are split into."),
    click.option("--progress/--no-progress", default=True, show_default=True),
]


def _shard_options(fn):
    for option in reversed(_SHARD_OPTIONS):
        fn = option(fn)
    return fn


def _shard(labeled, manifest, out, name, max_size, max_count, seed, transcode, executor, workers, unit_index,
           num_units, progress):
    from vmae.shards.writer import ShardConfig, parse_size, parse_transcode, write_shards

    try:
        cfg = ShardConfig(name=name, labeled=labeled, max_size=parse_size(max_size), max_count=max_count,
                          seed=seed, transcode=parse_transcode(transcode))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    report = write_shards(manifest, out, cfg, _executor(executor, workers, unit_index, num_units),
                          progress=progress)
    for line in report.lines():
        click.echo(line)
    if report.complete and report.samples == 0:
        raise click.ClickException("no sample was written: every row was skipped (see skipped.parquet)")


@data.group("shard")
def shard():
    """Pack a manifest's clips into well-mixed WebDataset shards: NAME-000000.tar ..., index.parquet,
    skipped.parquet and shards.json (written last).

    \b
      vmae-data shard unlabeled-hybrid --manifest hybrid.parquet --out shards/uh --workers 8
      vmae-data shard k710 --manifest clips/train.parquet --out shards/k710-train

    Same manifest, seed and options give byte-identical shards with any executor or worker count. A rerun
    (after a crash, or of a Slurm slice) keeps the complete shards and writes the rest.
    """


@shard.command("unlabeled-hybrid")
@_shard_options
@click.option("--name", default="uh", show_default=True, help="Shard file prefix: NAME-000000.tar, ...")
@user_errors
def shard_unlabeled_hybrid(**options):
    """Unlabeled shards (KEY.mp4 + KEY.json) for pretraining."""
    _shard(False, **options)


@shard.command("k710")
@_shard_options
@click.option("--name", help="Shard file prefix. [default: the manifest's split when it has one (train, val), "
                             "else k710]")
@user_errors
def shard_k710(**options):
    """Labeled shards (KEY.mp4 + KEY.json + KEY.cls) for fine-tuning and evaluation; rows need label_id.

    Shard one split per folder: --manifest clips/train.parquet --out shards/k710-train.
    """
    _shard(True, **options)


@data.command("verify")
@click.argument("shard_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--decode", is_flag=True, help="Also decode every frame of every clip with the training decoder.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Shards checked at once.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@user_errors
def verify_cmd(shard_dir, decode, workers, progress):
    """Check every shard of SHARD_DIR against index.parquet and shards.json: sizes, checksums, complete
    members, valid JSON, mp4+json(+cls) per sample, counts; with --decode, that every clip decodes.
    Lists each problem and exits 1 if there is any.

    \b
      vmae-data verify shards/uh --workers 4
    """
    from vmae.shards.verify import verify

    report = verify(shard_dir, decode=decode, workers=workers, progress=progress)
    for problem in report.problems:
        click.echo(problem)
    decoded = f", {report.decoded} decoded" if decode else ""
    click.echo(f"{shard_dir}: {report.shards} shards, {report.samples} samples{decoded}; "
               f"{len(report.problems)} problem(s)")
    if report.problems:
        raise SystemExit(1)


@data.command("stats")
@click.argument("shard_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write a PNG: source mix, clip durations, resolutions.")
@user_errors
def stats_cmd(shard_dir, plot):
    """Samples, hours and GB per source and split of the shard set in SHARD_DIR.

    \b
      vmae-data stats shards/uh --plot uh-stats.png
    """
    from vmae.shards.stats import plot_stats, sample_table, summarize

    samples = sample_table(shard_dir)
    click.echo(summarize(samples).to_string(float_format=lambda x: f"{x:.3f}"))
    if plot:
        click.echo(f"wrote {plot_stats(samples, plot)}")


# ---------------------------------------------------------------- vmae-train pretrain / visualize (pretrain stream)

def _pt_default(name):
    """A PretrainConfig default for --help (vmae.training.config imports no torch)."""
    from vmae.training.config import PretrainConfig
    return PretrainConfig.__dataclass_fields__[name].default


@train.command("pretrain")
@click.option("--shards", required=True,
              help="Shard URLs with brace patterns, e.g. 'shards/uh-{000000..001347}.tar'; join sets with '::'.")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: config.json, log.jsonl, tb/, checkpoint-STEP.pth.")
@click.option("--preset", type=click.Choice(["vit-b-hybrid", "vit-l-hybrid", "vit-h-hybrid", "vit-g-hybrid"]),
              help="The reference's recipe for that model size (model, epochs, warmup, lr, clip, checkpointing); "
                   "options given here still win.")
@click.option("--model", help=f"Model name. [default: {_pt_default('model')}]")
@click.option("--num-frames", type=int, help="Frames per clip. [default: 16]")
@click.option("--input-size", type=int, help="Crop size in pixels. [default: 224]")
@click.option("--decoder-depth", type=int, help="Decoder blocks. [default: 4]")
@click.option("--drop-path", type=float, help="Stochastic depth rate. [default: 0]")
@click.option("--batch-size", type=int, help="Videos per process per micro-step. [default: 32]")
@click.option("--num-sample", type=int, help="Views per decoded video (repeated augmentation). [default: 4]")
@click.option("--accum-steps", type=int, help="Micro-steps per optimiser step (gradient accumulation). [default: 1]")
@click.option("--epochs", type=int, help="Passes over the shard set's videos (see above). [default: 300]")
@click.option("--warmup-epochs", type=int, help="Linear warmup from lr 0. [default: 30]")
@click.option("--steps-per-epoch", type=int,
              help="Batches per process per epoch, when the shards have no shards.json to count from.")
@click.option("--max-steps", type=int, help="Stop after this many optimiser steps (smoke runs); the lr schedule "
                                            "still spans --epochs.")
@click.option("--base-lr", type=float, help="lr per 256 clips. [default: 1.5e-4]")
@click.option("--min-lr", type=float, help="Final lr per 256 clips. [default: 2.5e-6]")
@click.option("--weight-decay", type=float, help="AdamW weight decay (not on 1-D params or the mask token). "
                                                 "[default: 0.05]")
@click.option("--clip-grad", type=float, help="Gradient-norm clip; 0 turns clipping off. [default: 0.02]")
@click.option("--mask-ratio", type=float, help="Encoder tube-mask ratio. [default: 0.9]")
@click.option("--decoder-mask-ratio", type=float,
              help="Decoder running-cell ratio: 0.25, 0.5 or 0.75; 0 = VideoMAE v1. [default: 0.5]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="Encoder precision; auto = bf16 on GPU, off on CPU; fp16 adds a grad scaler. [default: auto]")
@click.option("--checkpoint-activations/--no-checkpoint-activations", default=None,
              help="Recompute block activations in backward (less memory, ~30% more compute).")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="[default: cuda when available]")
@click.option("--workers", type=int, help="Loader worker processes per training process. [default: 8]")
@click.option("--decoder", type=click.Choice(["pyav", "decord"]), help="Video decoder backend.")
@click.option("--shuffle-buffer", type=int, help="Samples in the loader's shuffle buffer.")
@click.option("--deterministic", is_flag=True, default=None,
              help="One loader worker, no resampling: a resumed run replays exactly (for debugging and tests).")
@click.option("--resume", help="'auto' (newest complete checkpoint in --output-dir; fresh start if none) or a "
                               "checkpoint path.")
@click.option("--save-every-steps", type=int, help="Checkpoint interval in steps; one is also written at the end. "
                                                   "[default: 1000]")
@click.option("--keep-last", type=int, help="Numbered checkpoints to keep. [default: 3]")
@click.option("--log-every", type=int, help="Log interval in steps. [default: 10]")
@click.option("--no-tensorboard", is_flag=True, help="Skip TensorBoard events (log.jsonl is always written).")
@click.option("--seed", type=int, help="[default: 0]")
@user_errors
def pretrain_cmd(no_tensorboard, compile_, clip_grad, **options):
    """Pretrain VideoMAE V2 (dual masking) straight from WebDataset shards, on one process or under torchrun.

    \b
      vmae-train pretrain --shards 'shards/uh-{000000..001347}.tar' --preset vit-b-hybrid --output-dir runs/b
      torchrun --nproc_per_node 8 --no-python vmae-train pretrain --shards ... --output-dir runs/b

    \b
    Epochs: an epoch is one pass over the shard set's videos, as the reference's --epochs; each video gives
    --num-sample views (one decode), so the paper's epoch names are epochs x num_sample: "1200e" (ViT-g) is
    --epochs 300 --num-sample 4, "800e" (ViT-B) is --epochs 200 --num-sample 4.
    Learning rate: lr = base_lr x global batch / 256, where the global batch counts clips, views included:
    batch_size x num_sample x processes x accum_steps (the paper's Table 4; the reference's scripts counted
    videos, so their 6e-4 is our 1.5e-4 and their 1e-3 our 2.5e-4 at num_sample 4: same actual lr).
    The run prints the global batch and the actual lr at start-up; logs go to OUTPUT_DIR/log.jsonl and tb/.
    """
    import dataclasses
    import logging

    from vmae.training.config import pretrain_config
    from vmae.training.engine import NonFiniteLossError
    from vmae.training.pretrain import pretrain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options["tensorboard"] = False if no_tensorboard else None
    options["compile"] = compile_
    try:
        cfg = pretrain_config(options.pop("preset"), clip_grad=clip_grad or None, **options)
        if clip_grad == 0:
            cfg = dataclasses.replace(cfg, clip_grad=None)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        report = pretrain(cfg)
    except (NonFiniteLossError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if report["rank"] == 0:
        click.echo(f"pretrain: steps {report['start_step']} -> {report['steps']} of {report['total_steps']}, "
                   f"global batch {report['global_batch']} clips, lr {report['lr']:.4g}, last loss "
                   f"{report['loss'] if report['loss'] is None else round(report['loss'], 4)}, "
                   f"skipped samples {report['skipped']}")
        click.echo(f"checkpoint: {report['checkpoint']}")


@train.command("visualize")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="A pretrain checkpoint (vmae or official).")
@click.option("--shards", required=True, help="Shard URLs to draw clips from.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--num", default=4, show_default=True, help="Clips to show.")
@click.option("--model", help="Model name, for checkpoints without a vmae config (official ones).")
@click.option("--mask-ratio", type=float, help="Encoder mask ratio [default: the checkpoint's, else 0.9].")
@click.option("--seed", default=0, show_default=True, help="Which clips, crops and masks.")
@user_errors
def visualize_cmd(checkpoint, shards, out, num, model, mask_ratio, seed):
    """Draw, for a few clips: the input frames, the encoder's visible patches, the reconstruction of the hidden
    patches (de-normalised with each patch's own mean and std) and the target, as one PNG grid.

    \b
      vmae-train visualize --checkpoint runs/b/checkpoint-00010000.pth --shards 'shards/uh-000000.tar' --out recon.png
    """
    from vmae.training.visualize import visualize

    path = visualize(checkpoint, shards, out, num=num, model_name=model, mask_ratio=mask_ratio, seed=seed)
    click.echo(f"wrote {path}")


# ---------------------------------------------------------------- vmae-train finetune, distill, eval, extract-features
# (finetune stream)

def _ft_options(fn):
    """Options finetune and distill share; every default lives in FinetuneConfig (None = keep the preset's or
    the default value), so --help states the defaults in words."""
    options = [
        click.option("--shards", required=True, help="Labeled training shards (KEY.cls), brace patterns allowed, "
                                                     "e.g. 'k710/train-{000000..000659}.tar'."),
        click.option("--val-shards", help="Labeled shards for the single-view validation after every epoch."),
        click.option("--output-dir", required=True, type=click.Path(file_okay=False),
                     help="Run folder: config.json, log.jsonl, tb/, checkpoint-STEP.pth, checkpoint-best.pth."),
        click.option("--model", help="Fine-tune model name. [default: vit_base_patch16_224]"),
        click.option("--num-classes", type=int, help="Classes of the new head. [preset's, else 400; distill 710]"),
        click.option("--init", type=click.Path(exists=True),
                     help="Initial weights: a pretrain or fine-tuned checkpoint (vmae or official). A K710 head "
                          "is converted for 400/600/700 classes, any other mismatching head is re-initialised."),
        click.option("--model-key", help="Key(s) of the state dict inside --init. [default: model|module]"),
        click.option("--num-frames", type=int, help="Frames per clip. [default: 16]"),
        click.option("--input-size", type=int, help="Crop size. [default: 224]"),
        click.option("--drop-path", type=float, help="Stochastic depth rate. [default: 0.1]"),
        click.option("--head-drop", type=float, help="Dropout before the head. [default: 0]"),
        click.option("--sparse/--dense", default=None, help="Frame sampling: sparse TSN segments (SSV2) or dense "
                                                            "strided windows (Kinetics). [default: dense]"),
        click.option("--stride", type=int, help="Dense frame stride [default: each sample's own, from KEY.json]."),
        click.option("--flip/--no-flip", default=None, help="Random horizontal flip (off for SSV2). [default: on]"),
        click.option("--randaug", help="timm RandAugment spec, same ops on every frame; 'none' turns it off. "
                                       "[default: rand-m7-n4-mstd0.5-inc1]"),
        click.option("--reprob", type=float, help="Cube random-erasing probability. [default: 0.25]"),
        click.option("--batch-size", type=int, help="Videos per process per micro-step. [default: 16]"),
        click.option("--num-sample", type=int, help="Augmented clips per decoded video (repeated augmentation). "
                                                    "[default: 2]"),
        click.option("--accum-steps", type=int, help="Micro-steps per optimiser step. [default: 1]"),
        click.option("--epochs", type=int, help="Passes over the training videos. [default: 30]"),
        click.option("--warmup-epochs", type=int, help="Linear warmup from lr 0. [default: 5]"),
        click.option("--steps-per-epoch", type=int, help="Batches per process per epoch, when the shards have "
                                                         "no shards.json to count from."),
        click.option("--max-steps", type=int, help="Stop after this many optimiser steps (smoke runs)."),
        click.option("--base-lr", type=float, help="lr per 256 videos (see above). [default: 1e-3]"),
        click.option("--min-lr", type=float, help="Final lr per 256 videos. [default: 1e-6]"),
        click.option("--weight-decay", type=float, help="AdamW weight decay (not on 1-D params). [default: 0.05]"),
        click.option("--layer-decay", type=float, help="Layer-wise lr decay; 1 turns it off. [default: 0.75]"),
        click.option("--clip-grad", type=float, help="Gradient-norm clip; 0 = none. [default: none]"),
        click.option("--mixup", type=float, help="Mixup alpha; 0 turns it off. [default: 0.8]"),
        click.option("--cutmix", type=float, help="CutMix alpha; 0 turns it off. [default: 1.0]"),
        click.option("--smoothing", type=float, help="Label smoothing. [default: 0.1]"),
        click.option("--model-ema", is_flag=True, default=None, help="Keep an EMA of the weights (validated too)."),
        click.option("--model-ema-decay", type=float, help="[default: 0.9999]"),
        click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]),
                     help="auto = bf16 autocast on GPU, off on CPU; fp16 adds a grad scaler. [default: auto]"),
        click.option("--checkpoint-activations", is_flag=True, default=None,
                     help="Recompute block activations in backward (less memory)."),
        click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), help="[default: cuda when available]"),
        click.option("--workers", type=int, help="Loader worker processes per training process. [default: 8]"),
        click.option("--decoder", type=click.Choice(["pyav", "decord"]), help="Video decoder backend."),
        click.option("--resume", help="'auto' (newest epoch checkpoint in --output-dir, fresh start if none) or a "
                                      "checkpoint path."),
        click.option("--keep-last", type=int, help="Epoch checkpoints to keep (besides checkpoint-best.pth). "
                                                   "[default: 1]"),
        click.option("--log-every", type=int, help="Log interval in steps. [default: 10]"),
        click.option("--no-tensorboard", is_flag=True, help="Skip TensorBoard events (log.jsonl is always written)."),
        click.option("--seed", type=int, help="[default: 0]"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _ft_config(cls, preset, no_tensorboard, compile_, clip_grad, randaug, options):
    import dataclasses

    from vmae.training.config import finetune_config

    options.update(tensorboard=False if no_tensorboard else None, compile=compile_,
                   clip_grad=clip_grad or None, randaug=None if randaug in (None, "none") else randaug)
    try:
        cfg = finetune_config(preset, cls=cls, **options)
        if clip_grad == 0:
            cfg = dataclasses.replace(cfg, clip_grad=None)
        if randaug == "none":
            cfg = dataclasses.replace(cfg, randaug=None)
        if cfg.layer_decay == 1.0:
            cfg = dataclasses.replace(cfg, layer_decay=None)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return cfg


def _run_training(fn, cfg):
    import logging

    from vmae.training.checkpoint import CheckpointError
    from vmae.training.engine import NonFiniteLossError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = fn(cfg)
    except (NonFiniteLossError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    if report["rank"] == 0:
        val = report["val"]
        scores = (f"last val top-1 {val['top1']:.2f} top-5 {val['top5']:.2f}, best top-1 {report['best_top1']:.2f}"
                  if val else "no validation (no --val-shards)")
        click.echo(f"steps {report['steps']} of {report['total_steps']}, global batch {report['global_batch_videos']} "
                   f"videos, lr {report['lr']:.4g}; {scores}")
        click.echo(f"last checkpoint: {report['last_checkpoint']}" +
                   (f"\nbest checkpoint: {report['best_checkpoint']}" if report["best_checkpoint"] else ""))


def _presets(kind):
    from vmae.training import presets
    return list(presets.FINETUNE_PRESETS if kind == "finetune" else presets.DISTILL_PRESETS)


@train.command("finetune")
@click.option("--preset", type=click.Choice(_presets("finetune")),
              help="The paper's recipe (Table 5: k710-post-pretrain; Table 3: k400, k600, ssv2, ucf101, hmdb51) for "
                   "the --model size: lr, layer decay, drop path, weight decay, epochs, batch, classes, sampling, "
                   "flip. Options given here still win.")
@_ft_options
@user_errors
def finetune_cmd(preset, no_tensorboard, compile_, clip_grad, randaug, **options):
    """Fine-tune a pretrained VideoMAE V2 encoder on labeled shards (one process or torchrun).

    \b
      vmae-train finetune --preset k710-post-pretrain --model vit_giant_patch14_224 \\
        --shards 'k710/train-{000000..000659}.tar' --val-shards 'k710/val-{000000..000066}.tar' \\
        --init vit_g_hybrid_pt_1200e.pth --output-dir runs/g-k710
      torchrun --nproc_per_node 8 --no-python vmae-train finetune --preset ssv2 ...

    \b
    Head: mean-pooled tokens -> fc_norm -> linear head (init scale 0.001). AdamW with layer-wise lr decay
    (patch_embed layer 0, block n layer n+1, head last), per-step warmup from 0 then cosine. Each decoded video
    gives --num-sample clips (RandAugment identical on every frame, random resized crop, flip); on the device:
    ImageNet normalisation, cube random erasing, Mixup/CutMix over whole clips with label smoothing folded in.
    Learning rate: lr = base_lr x batch_size x processes x accum_steps / 256, counting videos, not the
    repeated views, as the reference's fine-tuning and the paper's tables (so presets carry their numbers).
    After every epoch: single-view validation (top-1/top-5), an epoch checkpoint, and checkpoint-best.pth when
    top-1 improves (weights under `model` with official key names).
    """
    from vmae.training.config import FinetuneConfig
    from vmae.training.finetune import finetune

    _run_training(finetune, _ft_config(FinetuneConfig, preset, no_tensorboard, compile_, clip_grad, randaug,
                                       options))


@train.command("distill")
@click.option("--preset", type=click.Choice(_presets("distill")),
              help="The paper's Table 10 for K710 (the defaults) or SSV2 (lr 5e-4, sparse, no flip, 174 classes).")
@click.option("--teacher", required=True, type=click.Path(exists=True), help="Fine-tuned teacher checkpoint.")
@click.option("--teacher-model", help="Teacher model name [default: the name recorded in the checkpoint].")
@click.option("--teacher-key", help="Key(s) of the state dict inside --teacher. [default: model|module]")
@click.option("--temperature", type=float, help="Softmax temperature of the KL loss. [default: 3.0]")
@_ft_options
@user_errors
def distill_cmd(preset, no_tensorboard, compile_, clip_grad, randaug, **options):
    """Distil a fine-tuned teacher into a smaller student by matching logits (KL at temperature 3).

    The student starts from a post-pretrained checkpoint; the loss is KL(softmax(teacher/T) ||
    softmax(student/T)) x T^2.

    \b
      vmae-train distill --teacher vit_g_k710_ft.pth --teacher-model vit_giant_patch14_224 \\
        --model vit_base_patch16_224 --init vit_b_k710_post_pretrain.pth \\
        --shards 'k710/train-{000000..000659}.tar' --val-shards 'k710/val-{000000..000066}.tar' \\
        --output-dir runs/b-distill

    \b
    Defaults are Table 10 (AdamW lr 1e-3 per 256 videos, wd 0.05, cosine, warmup 5, 100 epochs, RandAugment,
    mixup 0.8, cutmix 1.0, drop path 0.1, layer decay 0.75, clip 1.0). The teacher runs in eval mode under
    no_grad on exactly the clips the student sees (after erasing and mixup). Everything else, validation and
    checkpoints included, is as `vmae-train finetune`.
    """
    from vmae.training.config import DistillConfig
    from vmae.training.distill import distill

    _run_training(distill, _ft_config(DistillConfig, preset, no_tensorboard, compile_, clip_grad, randaug,
                                      options))


@train.command("eval")
@click.option("--shards", required=True, help="Labeled shards to score, e.g. 'k400/val-{000000..000019}.tar'.")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="Fine-tuned checkpoint (vmae or official; weights under model or module).")
@click.option("--model", help="Model name [default: the name recorded in the checkpoint].")
@click.option("--preset", type=click.Choice(_presets("finetune")),
              help="Views, sampling and classes of a task: 5x3 dense for Kinetics/UCF/HMDB, 2x3 sparse for SSV2.")
@click.option("--views", help="SEGMENTSxCROPS. [default: 5x3]")
@click.option("--sparse/--dense", default=None, help="Sparse TSN-style views (SSV2) or dense strided windows.")
@click.option("--stride", type=int, help="Dense frame stride [default: each sample's own, from KEY.json].")
@click.option("--label-map", type=click.Choice(["k710-to-k400", "k710-to-k600", "k710-to-k700"]),
              help="Score a K710 head on K400/K600/K700 by the official row gather (label_710to{N}.json).")
@click.option("--num-classes", type=int, help="Expected head size [default: the checkpoint's].")
@click.option("--model-key", help="Key(s) of the state dict in the checkpoint. [default: model|module]")
@click.option("--num-frames", type=int, help="[default: 16]")
@click.option("--input-size", type=int, help="Crop size. [default: 224]")
@click.option("--short-side", type=int, help="Resize the shorter side to this before cropping. [default: input size]")
@click.option("--batch-size", type=int, help="Videos per process per batch (each gives all its views). [default: 4]")
@click.option("--workers", type=int, help="Loader worker processes. [default: 4]")
@click.option("--decoder", type=click.Choice(["pyav", "decord"]), help="Video decoder backend.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), help="[default: auto]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="[default: cuda when available]")
@click.option("--output-dir", type=click.Path(file_okay=False),
              help="Where predictions.parquet, metrics.json (and confusion.png) go. "
                   "[default: eval-CKPT-VIEWS[-MAP] next to the checkpoint]")
@click.option("--confusion", is_flag=True, default=None, help="Also draw confusion.png.")
@click.option("--save-probs", is_flag=True, default=None, help="Store every video's full probability vector.")
@user_errors
def eval_cmd(preset, **options):
    """Multi-view testing: each video decoded once, all its views cut from that decode, softmax probabilities
    averaged over views. Prints top-1, top-5 and mean per-class accuracy.

    \b
      vmae-train eval --shards 'k400/val-{000000..000019}.tar' --checkpoint runs/g-k400/checkpoint-best.pth
      vmae-train eval --shards 'ssv2/val-{000000..000024}.tar' --checkpoint ssv2_ft.pth --preset ssv2
      vmae-train eval --shards 'k400/val-{000000..000019}.tar' --checkpoint vit_g_k710_ft.pth --label-map k710-to-k400
      torchrun --nproc_per_node 8 --no-python vmae-train eval ...

    \b
    Views: 5x3 = 5 windows of 16 frames at the stride, spread evenly over the video, x 3 crops along the longer
    side (as the reference); 2x3 with --sparse = 2 interleaved TSN samplings x 3 crops. Scores are identical on
    one process and under torchrun: results are gathered by video key, de-duplicated and sorted.
    """
    from vmae.training.checkpoint import CheckpointError
    from vmae.training.config import eval_config
    from vmae.training.evaluate import evaluate

    try:
        cfg = eval_config(preset, **options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        report = evaluate(cfg)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None
    if report["rank"] == 0:
        click.echo(f"{report['videos']} videos ({report['skipped']} undecodable, skipped), {report['views']} "
                   f"{report['sampling']} views: top-1 {report['top1']:.2f}  top-5 {report['top5']:.2f}  "
                   f"mean class accuracy {report['mean_class_accuracy']:.2f}")
        if report["repeated_keys"]:
            click.echo(f"warning: {len(report['repeated_keys'])} keys occur in more than one shard, scored once: "
                       f"{', '.join(report['repeated_keys'][:5])}")
        click.echo(f"predictions: {report['predictions']}" +
                   (f"\nconfusion matrix: {report['confusion']}" if report["confusion"] else ""))


@train.command("extract-features")
@click.option("--checkpoint", required=True, type=click.Path(exists=True),
              help="Fine-tuned (or pretrain) checkpoint, vmae or official.")
@click.option("--model", help="Model name [default: the name recorded in the checkpoint].")
@click.option("--videos", type=click.Path(exists=True, file_okay=False),
              help="Folder of video files (searched recursively); KEY = path without the suffix.")
@click.option("--shards", help="Or shards (KEY.mp4 members); KEY = the sample key.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for KEY.npy and index.parquet.")
@click.option("--window-stride", type=int, help="Frames between window starts. [default: 4]")
@click.option("--frame-stride", type=int, help="Frames between a window's frames. [default: 1]")
@click.option("--num-frames", type=int, help="Frames per window (the model's). [default: 16]")
@click.option("--input-size", type=int, help="Frames are resized to this square. [default: 224]")
@click.option("--batch-size", type=int, help="Windows per forward pass. [default: 16]")
@click.option("--model-key", help="Key(s) of the state dict in the checkpoint. [default: model|module]")
@click.option("--decoder", type=click.Choice(["pyav", "decord"]), help="Video decoder backend.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), help="[default: auto]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="[default: cuda when available]")
@click.option("--overwrite", is_flag=True, default=None, help="Recompute videos whose KEY.npy exists.")
@user_errors
def extract_features_cmd(**options):
    """Features of consecutive windows of every video, for temporal action detection (ActionFormer style).

    \b
      vmae-train extract-features --checkpoint vit_g_k710_ft.pth --videos thumos14/videos --out thumos14/features

    \b
    Window i covers frames i*window_stride + j*frame_stride, j < num_frames; windows running past the last
    frame are dropped and a video shorter than one window gives one window padded with its last frame, so
    n frames give max(1, (n - (num_frames-1)*frame_stride - 1) // window_stride + 1) windows. Each window is
    the whole frame resized to a square and ImageNet-normalised (the reference's TAD script skips the
    normalisation), and its feature is the model's pooled encoder output: OUT/KEY.npy is [windows, width]
    float32. index.parquet lists every input with frames, fps, windows and status (ok / exists / failed +
    error). A rerun keeps existing files; under torchrun each rank takes every N-th video.
    """
    from vmae.training.config import FeatureConfig, build_config
    from vmae.training.features import extract_features

    try:
        cfg = build_config(FeatureConfig, {}, None, **options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    report = extract_features(cfg)
    if report["rank"] == 0:
        click.echo(f"{report['videos']} videos: {report['ok']} extracted, {report['existing']} already there, "
                   f"{report['failed']} failed (see index.parquet); {report['windows']} windows of "
                   f"{report['feature_dim']} features ({report['window']}) in {report['out']}")
