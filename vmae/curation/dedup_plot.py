"""A PNG of example duplicate pairs, the closest frames side by side, for a person to check dedup's calls."""
from pathlib import Path

import numpy as np
import pandas as pd

from vmae import media
from vmae.atomic import atomic_path

WIDTH = 224   # pixels per shown frame; the height follows the clip's aspect ratio


def example_pairs(pairs: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to n pairs spread over the distance range of each reason (leaks first): the borderline ones are the
    ones worth a look, the closest ones show what a sure match is."""
    picked = []
    for reason in sorted(pairs["reason"].unique(), key=lambda r: r != "eval-leak"):
        group = pairs[pairs["reason"] == reason].sort_values(["distance", "key_a", "key_b"])
        take = min(len(group), max(1, n - len(picked)) if reason != "eval-leak" else max(1, (n + 1) // 2))
        at = np.unique(np.linspace(0, len(group) - 1, take).round().astype(int))
        picked.append(group.iloc[at])
    return pd.concat(picked).head(n)


def _frame(clips, key: str, set_name: str, at: float) -> np.ndarray:
    import pyarrow.compute as pc

    named = pc.equal(clips.meta.column("key"), key).to_numpy(zero_copy_only=False)
    i = np.flatnonzero(named & (clips.set_code == clips.set_names.index(set_name)))[:1]
    src, offset, size = (clips.column(c, i)[0] for c in ("path", "offset", "size"))
    if pd.notna(offset):
        with open(src, "rb") as f:
            f.seek(int(offset))
            src = f.read(int(size))

    def nearest(times):
        return [int(np.argmin(np.abs(times - at)))]

    try:
        facts, _, frames = media.grab_frames(src, nearest, (WIDTH, WIDTH * 3 // 4), "rgb24")
    except (media.MediaError, OSError):
        return np.zeros((WIDTH * 3 // 4, WIDTH, 3), np.uint8)
    return frames[0]


def plot_pairs(pairs: pd.DataFrame, clips, path, n: int = 8) -> Path:
    """Draw up to n example pairs (rows: clip a, clip b) into the PNG `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = example_pairs(pairs, n)
    fig, axes = plt.subplots(len(chosen), 2, figsize=(7, 2.6 * len(chosen)), squeeze=False)
    for row, pair in zip(axes, chosen.itertuples(index=False)):
        for ax, side in zip(row, ("a", "b")):
            key, set_name = getattr(pair, f"key_{side}"), getattr(pair, f"set_{side}")
            at = getattr(pair, f"time_{side}")
            ax.imshow(_frame(clips, key, set_name, float(at)))
            ax.set_title(f"{set_name}/{key} @ {at:.1f}s", fontsize=8)
            ax.axis("off")
        motion = getattr(pair, "motion", None)
        row[0].text(0, -0.25, f"{pair.reason}, distance {pair.distance:.0f}, frames {pair.matched_a}/{pair.frames_a}"
                    f" and {pair.matched_b}/{pair.frames_b}" + (", mirrored" if pair.mirrored else "")
                    + (f", motion {motion:.2f} at lag {pair.lag:+.1f}s" if motion is not None and motion == motion
                       else ""), transform=row[0].transAxes, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
