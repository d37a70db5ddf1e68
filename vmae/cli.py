"""The front door: click groups for `vmae-data` and `vmae-train`.

Each command checks its options, calls one library function and reports. Library modules are imported
inside the commands so that `--help` answers at once without loading torch or Ray.
"""
import functools

import click

from vmae.manifests.errors import ManifestError


def user_errors(fn):
    """Turn expected input errors into a clean message and exit code 1 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ManifestError, FileNotFoundError) as e:
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
      vmae-train finetune --shards 'k710/train-{000000..000009}.tar' --init runs/pt/checkpoint-last.pth ...
      vmae-train eval --shards 'k710/val-{000000..000001}.tar' --checkpoint runs/ft/checkpoint-best.pth ...
    """
