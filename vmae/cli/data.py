"""`vmae-data`: annotation lists in, manifests out; videos in, clips and WebDataset shards out.

The options of build-k710, ava and download are generated from their config dataclasses (vmae/cli/options.py),
so each default lives in its config alone; the other curation steps take a few plain arguments each, written
here, and the option sets several commands share (executor, progress) are in vmae/cli/common.py. The shard
commands (shard, verify, index, stats) are in vmae/cli/shards.py. Each command calls one library function and
prints its report.
"""
import click

from vmae.cli.common import PROGRESS, echo_report, executor_config, executor_options, group, handle_errors
from vmae.cli.options import config_options, given
from vmae.cli.shards import exclusions, index_cmd, shard, stats_cmd, verify_cmd
from vmae.curation.ava import AvaConfig
from vmae.curation.dedup import DedupConfig
from vmae.curation.download import DownloadConfig
from vmae.curation.kinetics import BuildK710Config
from vmae.executors import ExecutorConfig


@group
def data(debug):
    """vmae-data: build VideoMAE V2 training data from public video datasets.

    \b
    Typical flow:
      vmae-data build-k710 --k400 kinetics400 --k600 kinetics600 --k700 kinetics700_2020 --out k710
      vmae-data download k710/train.parquet --out clips/k710-train
      vmae-data mix unlabeled-hybrid --k710 clips/k710-train/manifest.parquet ... --out hybrid.parquet
      vmae-data shard unlabeled-hybrid --manifest hybrid.parquet --out shards/uh
    The whole route, step by step: README.md.
    """


OUT_MANIFEST = click.option("--out", required=True, type=click.Path(dir_okay=False),
                            help="Manifest to write (.parquet).")


@data.command("build-k710")
@click.option("--k400", type=click.Path(path_type=str), metavar="DIR",
              help="Official K400 annotation folder (train.csv, val.csv, optional test.csv).")
@click.option("--k600", type=click.Path(path_type=str), metavar="DIR", help="Same for K600.")
@click.option("--k700", type=click.Path(path_type=str), metavar="DIR", help="Same for K700 (2020).")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="OUT",
              help="Output folder (created; its outputs are replaced only once the build has succeeded).")
@click.option("--label-aliases", type=click.Path(dir_okay=False), metavar="FILE.json",
              help='JSON object {"label in a CSV": "K710 name"} for labels the built-in rules do not place.')
@config_options(BuildK710Config)
@handle_errors
def build_k710_cmd(k400, k600, k700, out, label_aliases, **options):
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
    from vmae.curation.kinetics import build_k710, format_summary, load_label_aliases

    aliases = load_label_aliases(label_aliases) if label_aliases else {}
    config = BuildK710Config(label_aliases=aliases, **given(options))
    click.echo(format_summary(build_k710(k400, k600, k700, out, config)))


# ---------------------------------------------------------------- curation: ssv2, ava, sample, import, mix

@data.command("ssv2")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Official annotation JSON, e.g. something-something-v2-train.json.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The 174-class label file (something-something-v2-labels.json).")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the extracted videos, named ID.webm.")
@OUT_MANIFEST
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Split of every row [default: from the annotation file name].")
@click.option("--ext", default="webm", show_default=True, help="Video file extension.")
@click.option("--probe", is_flag=True, help="Probe every video now (status ok / reason, probe facts); "
              "otherwise existing files keep an empty status until download --from-dir or shard checks them.")
@executor_options("Parallel probes (with --probe).", slices=False)
@handle_errors
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
    echo_report(ssv2_manifest(annotations, labels, videos, out, split=split, ext=ext, probe=probe,
                             executor=ExecutorConfig(workers=workers)))


@data.command("ava")
@click.option("--file-list", required=True, type=click.Path(exists=True, dir_okay=False),
              help="ava_file_names_trainval_v2.1.txt: one movie file name per line.")
@click.option("--videos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of the downloaded movies (a listed name with another extension is accepted).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: clips/, parts/ and manifest.parquet.")
@config_options(AvaConfig)
@executor_options("Movies cut in parallel (local executor).")
@handle_errors
def ava(file_list, videos, out, **options):
    """Cut AVA movies (900 s to 1800 s) into consecutive 300-frame clips at 30 fps, frame-exact.

    90 clips per full movie, keys ava_MOVIE_000..089, no gaps or overlaps. Movies that are missing or too
    short are reported with the clips that could be cut; each planned clip has a manifest row with its
    status. A rerun keeps clips already cut (right frame count) and cuts the rest.

    \b
    Example:
      vmae-data ava --file-list ava_file_names_trainval_v2.1.txt --videos ava/movies --out ava/ --workers 8
    """
    from vmae.curation.ava import cut_ava
    run = executor_config(options)
    echo_report(cut_ava(file_list, videos, out, AvaConfig(**given(options)), run))


@data.command("sample")
@click.argument("source", type=click.Choice(["webvid", "instagram"]))
@click.option("--metadata", required=True, type=click.Path(exists=True, dir_okay=False),
              help="WebVid: the metadata CSV (videoid, contentUrl, duration, ...). "
                   "Instagram: CSV/TSV/JSONL with id and url and/or path.")
@click.option("--n", "n", default=250_000, show_default=True, help="Rows to sample.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same sample, on any machine.")
@OUT_MANIFEST
@handle_errors
def sample(source, metadata, n, seed, out):
    """A seeded random sample of N usable rows of a WebVid2M or Instagram list (stride 4, unlabeled).

    Rows without a URL, with a bad or non-positive duration, or with an id seen before are excluded
    before sampling and listed in OUT.rejects.csv. Asking for more rows than are usable is an error.

    \b
    Example:
      vmae-data sample webvid --metadata results_2M_train.csv --n 250000 --seed 0 --out webvid.parquet
    """
    from vmae.curation.sampling import sample_source
    echo_report(sample_source(source, metadata, n, seed, out))


@data.command("import")
@click.argument("src", type=click.Path(exists=True))
@click.option("--source", required=True, help="Source name for the rows and their keys, e.g. ucf101.")
@OUT_MANIFEST
@click.option("--labels-from", type=click.Choice(["folders", "csv", "none"]),
              help="Class of each video [default: folders for a folder, csv for a list with a label column].")
@click.option("--stride", default=4, show_default=True, help="Temporal sampling stride of every row.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), help="Split of every row.")
@click.option("--root", type=click.Path(exists=True, file_okay=False),
              help="Folder that relative paths in a list start from [default: the list's folder].")
@click.option("--class-list", metavar="FILE|k400|k600|k700|k710",
              help="Fixed class list (one name per line, id = line from 0), e.g. the train import's "
                   "OUT.classes.txt when importing its test split; or an official Kinetics label map by name, "
                   "for labelled shards with that version's class ids (K400 fine-tuning).")
@click.option("--probe", is_flag=True, help="Probe every video now (status ok / reason, probe facts).")
@executor_options("Parallel probes (with --probe).", slices=False)
@handle_errors
def import_(src, source, out, labels_from, stride, split, root, class_list, probe, workers):
    """Import your own videos: a folder tree (CLASS/VIDEO.ext) or a CSV/TSV of path[,label].

    Writes the manifest, its class list OUT.classes.txt (sorted names, label_id = line from 0) and, for
    unreadable rows, OUT.rejects.csv with line numbers. Missing files keep a row with status missing-file.

    \b
    Examples:
      vmae-data import UCF-101/ --source ucf101 --out ucf101.parquet
      vmae-data import test.csv --source mine --labels-from csv --class-list train.classes.txt --out test.parquet
      vmae-data import k400-train.csv --source k400 --labels-from csv --class-list k400 --out k400-train.parquet
    """
    from vmae.curation.importer import import_videos
    echo_report(import_videos(src, source, out, labels_from=labels_from, stride=stride, split=split, root=root,
                             class_list=class_list, probe=probe, executor=ExecutorConfig(workers=workers)))


@data.group("mix")
def mix():
    """Combine per-source manifests into a pretraining mixture."""


@mix.command("unlabeled-hybrid")
@click.option("--k710", type=click.Path(exists=True, dir_okay=False), help="K710 train manifest.")
@click.option("--ssv2", type=click.Path(exists=True, dir_okay=False), help="SSV2 train manifest.")
@click.option("--ava", type=click.Path(exists=True, dir_okay=False), help="AVA manifest (vmae-data ava).")
@click.option("--webvid", type=click.Path(exists=True, dir_okay=False), help="Sampled WebVid2M manifest.")
@click.option("--instagram", type=click.Path(exists=True, dir_okay=False), help="Sampled Instagram manifest.")
@OUT_MANIFEST
@click.option("--stride", "strides", multiple=True, metavar="SOURCE=N",
              help="Override a source's stride (default 2 for ssv2, 4 otherwise); repeatable.")
@click.option("--exclude", type=click.Path(exists=True, dir_okay=False), metavar="PAIRS",
              help="dups/pairs.parquet of `vmae-data dedup`: drop the pretraining side of every pair (listed in "
                   "OUT.rejects.csv as eval-leak or duplicate-content).")
@handle_errors
def unlabeled_hybrid(k710, ssv2, ava, webvid, instagram, out, strides, exclude):
    """UnlabeledHybrid: concatenate the given manifests, set strides, drop duplicate keys, compare counts.

    Any source may be left out. Every row is kept whatever its status (shard takes the usable ones);
    a key already taken drops the later row (listed in OUT.rejects.csv). Prints clips per source next to
    the paper's Table 2 (K710 658k, SSv2 169k, AVA 21k, WebVid2M 250k, Instagram 250k; 1.35M).

    \b
    Example:
      vmae-data mix unlabeled-hybrid --k710 clips/k710-train/manifest.parquet --ssv2 ssv2.parquet \\
        --ava ava/manifest.parquet --webvid clips/webvid/manifest.parquet --out hybrid.parquet
    """
    from vmae.curation.hybrid import mix_unlabeled_hybrid
    overrides = {}
    for item in strides:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise click.BadParameter(f"{item!r}: expected SOURCE=N, e.g. ssv2=2", param_hint="--stride")
        overrides[name] = int(value)
    inputs = {"k710": k710, "ssv2": ssv2, "ava": ava, "webvid": webvid, "instagram": instagram}
    echo_report(mix_unlabeled_hybrid(inputs, out, overrides, exclusions(exclude)))


@data.command("download")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: clips/xx/KEY.mp4, manifest.parquet, report.json, .units/ (resume state).")
@config_options(DownloadConfig)
@click.option("--retry-failed", is_flag=False, flag_value="all", default=None, metavar="[REASONS]",
              help="Retry rows that failed in an earlier run: all of them, or only the comma-separated "
                   "reasons given (e.g. rate-limited,network).")
@executor_options("Units run in parallel (local process pool); each runs its rows in turn.")
@PROGRESS
@handle_errors
def download_cmd(manifest, out, retry_failed, progress, **options):
    """Fetch (yt-dlp) or adopt (--from-dir) every clip of MANIFEST, cut it frame-accurately to H.264 and
    record its probe facts and status.

    \b
    Kinetics from the CVDF mirror, then YouTube for what the mirror lacks:
      vmae-data download k710/train.parquet --out clips/k710-train --from-dir /data/kinetics/train --workers 16
      vmae-data download k710/train.parquet --out clips/k710-train --retry-failed missing-file --sleep 2

    A rerun skips finished rows and recorded failures (unless --retry-failed); nothing is fetched twice.
    """
    from vmae.curation.download import download

    retry = None if retry_failed is None else (
        () if retry_failed == "all" else tuple(r.strip() for r in retry_failed.split(",") if r.strip()))
    run = executor_config(options)
    echo_report(download(manifest, out, DownloadConfig(retry_failed=retry, **given(options)), run, progress))


# ---------------------------------------------------------------- content duplicates: fingerprint, dedup

def _numbers(ctx, param, value: str) -> tuple:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.88,0.92") from None


@data.command("fingerprint")
@click.argument("src", metavar="MANIFEST_OR_SHARD_DIR", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FP.parquet",
              help="Fingerprint table to write (resume state in .FP.parquet.units/ next to it).")
@click.option("--set", "set_name", metavar="NAME",
              help="Name of this collection in reports and pairs, e.g. k400-val [default: the manifest's file "
                   "stem or the shard folder's name].")
@click.option("--every", default=0.5, show_default=True, help="Seconds between hashed frames.")
@click.option("--min-frames", default=4, show_default=True, help="Frames hashed at least (short clips).")
@click.option("--max-frames", default=16, show_default=True, help="Frames hashed at most (long clips).")
@click.option("--crops", is_flag=True,
              help="Also hash 9 crops of every frame (92 % of each side, at the corners, edge middles and centre), "
                   "so that dedup finds cropped copies of these clips. Meant for the evaluation sets given to "
                   "dedup --against: they are small, and each frame costs 9 more hashes per crop scale.")
@click.option("--crop-scales", default="0.92", show_default=True, metavar="S,S,...", callback=_numbers,
              help="With --crops: the windows' sizes (share of each side kept), 9 windows each.")
@click.option("--motion-phases", default=1, show_default=True, metavar="P",
              help="Also store the motion signature on its grid shifted by 1/P, 2/P, ... of a step (0.2 s): for "
                   "an evaluation set, so that a trimmed copy's grid lies near one of them.")
@click.option("--dense", is_flag=True,
              help="For an evaluation set, where dedup's memory allows: --crops --crop-scales 0.86,0.90,0.94,0.98 "
                   "--every 0.125 --max-frames 64 --motion-phases 4 (options given as well win). Finds more "
                   "cropped and trimmed copies, at 15x the hashes per clip: dedup against K710 val (67k clips) "
                   "then needs about 12 GiB (docs/data.md).")
@click.option("--rows-per-unit", default=256, show_default=True, help="Clips per unit of work (and resume file).")
@executor_options("Units run in parallel (local process pool); one decoder thread each.")
@PROGRESS
@handle_errors
def fingerprint_cmd(src, out, set_name, every, min_frames, max_frames, crops, crop_scales, motion_phases, dense,
                    rows_per_unit, progress, **run):
    """Perceptual fingerprint of every clip of a manifest or shard folder, for `vmae-data dedup`.

    \b
      vmae-data fingerprint hybrid.parquet --out fp/hybrid.parquet --workers 16
      vmae-data fingerprint shards/k400-val --out fp/k400-val.parquet --set k400-val --dense
      vmae-data fingerprint ssv2-val.parquet --out fp/ssv2-val.parquet --crops   # dedup in less memory

    Per clip: PDQ hashes (Meta's 256-bit perceptual image hash) of frames about --every seconds apart, black
    bars (letterbox, pillarbox) cut away, with the mirror image's hash and PDQ's quality. Clips that cannot
    be read keep a row with their status (decode-error, missing-file, ...). A rerun skips finished units;
    Slurm slices and Ray work as for download.
    """
    from vmae.curation.fingerprint import DENSE, FingerprintConfig, fingerprint

    options = {"every": every, "min_frames": min_frames, "max_frames": max_frames, "crops": crops,
               "crop_scales": crop_scales, "motion_phases": motion_phases}
    options = {**options, **DENSE, **given(options)} if dense else options
    if given({"crop_scales": crop_scales}) and not options["crops"]:
        raise click.UsageError("--crop-scales sets the sizes of the crop windows: add --crops")
    cfg = FingerprintConfig(**options, rows_per_unit=rows_per_unit)
    echo_report(fingerprint(src, out, set_name, cfg, ExecutorConfig(**run), progress))


@data.command("dedup")
@click.option("--fingerprints", required=True, type=click.Path(exists=True, dir_okay=False), metavar="FP.parquet",
              help="Fingerprints of the pretraining set (vmae-data fingerprint).")
@click.option("--against", multiple=True, type=click.Path(exists=True, dir_okay=False), metavar="FP.parquet",
              help="Fingerprints of an evaluation set to check for leakage. Several sets: list their files "
                   "after --against, or repeat it.")
@click.argument("more_against", nargs=-1, type=click.Path(exists=True, dir_okay=False), metavar="[FP.parquet]...")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for pairs.parquet and report.json (and pairs.png).")
@config_options(DedupConfig)
@click.option("--plot", is_flag=True, help="Also draw DIR/pairs.png: example pairs, frames side by side.")
@PROGRESS
@handle_errors
def dedup_cmd(fingerprints, against, more_against, out, plot, progress, **options):
    """Near-duplicate clips within the pretraining set, and leakage of evaluation sets into it.

    \b
      vmae-data dedup --fingerprints fp/hybrid.parquet \\
          --against fp/k400-val.parquet fp/ssv2-val.parquet --out dups/ --plot
      vmae-data mix unlabeled-hybrid ... --exclude dups/pairs.parquet

    Pairs are found through an index over the frame hashes and motion signatures (no all-pairs comparison)
    and checked on all their frames, in either time order (trimmed copies match) and mirrored, and on their
    motion over time (at the best time lag). pairs.parquet: key_a (the pretraining clip --exclude drops),
    key_b (the evaluation clip it leaks, or the copy kept), set_a, set_b, reason (eval-leak |
    duplicate-content), distance, matched_a/frames_a, matched_b/frames_b, mirrored, motion, lag.
    Prints the duplicates per source and, per evaluation set, how many of its videos the pretraining set holds.
    """
    from vmae.curation.dedup import dedup

    echo_report(dedup(fingerprints, out, against + more_against, DedupConfig(**options), plot=plot,
                      progress=progress))


for command in (shard, verify_cmd, index_cmd, stats_cmd):
    data.add_command(command)
