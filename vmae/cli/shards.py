"""The shard commands of `vmae-data`: shard (unlabeled-hybrid, k710), verify, index and stats. Each calls one
library function of vmae.shards and prints its report."""
import click

from vmae.cli.common import PROGRESS, echo_report, executor_options, handle_errors, options
from vmae.executors import ExecutorConfig

SHARD_OPTIONS = options(
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
    click.option("--exclude", type=click.Path(exists=True, dir_okay=False), metavar="PAIRS",
                 help="dups/pairs.parquet of `vmae-data dedup`: leave out the pretraining side of every pair "
                      "(listed in skipped.parquet as eval-leak or duplicate-content)."),
    executor_options("Shards written at once by the local pool (with --transcode: the number of cores)."),
    PROGRESS)


def write_shard_set(labeled, manifest, out, name, max_size, max_count, seed, transcode, exclude, progress, **run):
    from vmae.shards.writer import ShardConfig, parse_size, parse_transcode, write_shards

    cfg = ShardConfig(name=name, labeled=labeled, max_size=parse_size(max_size), max_count=max_count, seed=seed,
                      transcode=parse_transcode(transcode))
    report = write_shards(manifest, out, cfg, ExecutorConfig(**run), progress=progress, exclude=exclusions(exclude))
    echo_report(report)


@click.group("shard")
def shard():
    """Pack a manifest's clips into well-mixed WebDataset shards: NAME-000000.tar ..., index.parquet,
    skipped.parquet and shards.json (written last).

    \b
      vmae-data shard unlabeled-hybrid --manifest hybrid.parquet --out shards/uh --workers 8
      vmae-data shard k710 --manifest clips/k710-train/manifest.parquet --out shards/k710-train

    Same manifest, seed and options give byte-identical shards with any executor or worker count. A rerun
    (after a crash, or of a Slurm slice) keeps the complete shards and writes the rest.
    """


@shard.command("unlabeled-hybrid")
@SHARD_OPTIONS
@click.option("--name", default="uh", show_default=True, help="Shard file prefix: NAME-000000.tar, ...")
@handle_errors
def shard_unlabeled_hybrid(**options):
    """Unlabeled shards (KEY.mp4 + KEY.json) for pretraining."""
    write_shard_set(False, **options)


@shard.command("k710")
@SHARD_OPTIONS
@click.option("--name", help="Shard file prefix. [default: the manifest's split when it has one (train, val), "
                             "else k710]")
@handle_errors
def shard_k710(**options):
    """Labeled shards (KEY.mp4 + KEY.json + KEY.cls) for fine-tuning and evaluation; rows need label_id.

    Shard one split per folder: --manifest clips/k710-train/manifest.parquet --out shards/k710-train.
    """
    write_shard_set(True, **options)


@click.command("verify")
@click.argument("shard_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--decode", is_flag=True, help="Also decode every frame of every clip with the training decoder.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Shards checked at once.")
@PROGRESS
@handle_errors
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


@click.command("index")
@click.argument("shards")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for index.parquet.  [default: the shards' folder, when it is local]")
@handle_errors
def index_cmd(shards, out):
    """Write index.parquet for tar shards made by another tool (webdataset's TarWriter, ...), so that training
    reads them in exact epochs: every member's key, shard, name, data offset and size. SHARDS is a brace
    pattern of paths or URLs (fsspec, pipe:); each tar is read once. vmae-data shard writes its own index.

    \b
      vmae-data index 'other/train-{000000..000099}.tar'
      vmae-data index 'https://host/train-{000000..000099}.tar' --out meta   # train with --index meta/index.parquet
    """
    from vmae.shards.index import index_tars, write_index
    from vmae.training.sources import local_path, shard_urls

    urls = shard_urls(shards)
    first = local_path(urls[0])
    folder = out or (first.parent if first is not None else None)
    if folder is None:
        raise click.UsageError(f"{urls[0]} is not a local file: say where index.parquet goes with --out")
    table = index_tars(urls)
    click.echo(f"wrote {write_index(folder, table)}: {len(table)} members of {len(urls)} shards")


@click.command("stats")
@click.argument("shard_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write a PNG: source mix, clip durations, resolutions.")
@handle_errors
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


def exclusions(pairs):
    """key -> (reason, message) of the clips --exclude PAIRS drops, or None without --exclude."""
    if pairs is None:
        return None
    from vmae.curation.dedup import read_exclusions
    return read_exclusions(pairs)
