"""What a shard folder holds: samples, hours and bytes per source and split, and a picture of the mix.

Per-sample facts come from the KEY.json members, read through index.parquet (seek + read, one open per
shard); bytes are the sizes of each sample's members.
"""
import json
from pathlib import Path

import pandas as pd

from vmae.manifests.schema import mixture_source
from vmae.shards import index as shard_index


def _duration(meta: dict):
    """Seconds of the clip: the probed duration, else frames / fps, else end - start; None if unknown."""
    if meta.get("duration") is not None:
        return float(meta["duration"])
    if meta.get("frames") and meta.get("fps"):
        return meta["frames"] / meta["fps"]
    if meta.get("start_sec") is not None and meta.get("end_sec") is not None:
        return float(meta["end_sec"]) - float(meta["start_sec"])
    return None


def sample_table(shard_dir) -> pd.DataFrame:
    """One row per sample: key, shard, source (as `mix` names it), split, duration (s, NaN if unknown), width,
    height, bytes."""
    index = shard_index.read_index(shard_dir)
    sizes = index.groupby("key")["size"].sum()
    rows = []
    for row, data in shard_index.read_members(shard_dir, index[index["member"].str.endswith(".json")]):
        meta = json.loads(data)
        source = mixture_source(meta.get("source") or "unknown")
        rows.append({"key": row.key, "shard": row.shard, "source": source,
                     "split": meta.get("split") or "unknown", "duration": _duration(meta),
                     "width": meta.get("width"), "height": meta.get("height"), "bytes": int(sizes[row.key])})
    table = pd.DataFrame(rows, columns=["key", "shard", "source", "split", "duration", "width", "height", "bytes"])
    for col in ("duration", "width", "height"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    return table


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """Samples, hours, GB and clips of unknown duration per (source, split), plus a total row."""
    def agg(group):
        return pd.Series({"samples": len(group), "hours": group["duration"].sum() / 3600,
                          "GB": group["bytes"].sum() / 1e9, "unknown_duration": int(group["duration"].isna().sum())})

    parts = [agg(g).rename((source, split)) for (source, split), g in samples.groupby(["source", "split"])]
    parts.append(agg(samples).rename(("total", "")))
    table = pd.DataFrame(parts)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["source", "split"])
    table["samples"] = table["samples"].astype(int)
    table["unknown_duration"] = table["unknown_duration"].astype(int)
    return table


def plot_stats(samples: pd.DataFrame, path) -> Path:
    """A PNG: source mix (share of samples and of hours), clip durations, and short sides in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vmae.atomic import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    by_source = samples.groupby("source").agg(samples=("key", "size"), hours=("duration", "sum"))
    share = by_source / by_source.sum().where(by_source.sum() > 0, 1)
    share.plot.bar(ax=axes[0], rot=30)
    axes[0].set(title=f"source mix ({len(samples)} samples)", ylabel="share", xlabel="")
    durations = samples["duration"].dropna()
    short = samples[["width", "height"]].min(axis=1, skipna=False).dropna()
    for ax, values, title, unit in ((axes[1], durations, f"clip duration ({durations.sum() / 3600:.2f} h)", "seconds"),
                                    (axes[2], short, "resolution (short side)", "pixels")):
        if len(values):
            ax.hist(values, bins=40)
        else:
            ax.text(0.5, 0.5, "not recorded in the metadata", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title, xlabel=unit, ylabel="clips")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
