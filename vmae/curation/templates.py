"""Where a download row's video is: URL and file-name templates filled from the row, and the checks that keep
a row's values from leading anywhere else (a file outside --from-dir, a URL that is not http(s))."""
from pathlib import Path
from string import Formatter
from urllib.parse import urlsplit

import pandas as pd

from vmae import media

URL_SCHEMES = ("http", "https")
# The file names of the CVDF Kinetics mirror: what download --from-dir finds, and build-k710's default list paths.
CVDF_TEMPLATE = "{video_id}_{start:06d}_{end:06d}.mp4"
TEMPLATE_FIELDS = ("video_id", "key", "source", "split", "label", "start", "end", "start_sec", "end_sec")


def template_fields(template: str) -> set:
    return {name for _, name, _, _ in Formatter().parse(template) if name}


def fill_template(template: str, row: dict) -> str:
    """Fill a URL or file-name template from a row; start/end are whole seconds, as in the CVDF names."""
    start, end = cell(row.get("start_sec")), cell(row.get("end_sec"))
    values = {"video_id": row.get("video_id"), "key": row.get("key"), "source": row.get("source"),
              "split": row.get("split"), "label": row.get("label"), "start_sec": start, "end_sec": end,
              "start": None if start is None else int(round(start)),
              "end": None if end is None else int(round(end))}
    missing = sorted(f for f in template_fields(template) if values.get(f) is None)
    if missing:
        raise media.MediaError(media.UNKNOWN, f"row has no {', '.join(missing)} for template {template!r}")
    return template.format(**values)


def file_in(folder, template: str, row: dict) -> Path:
    """folder / the template filled from the row, refused when a value would lead out of the folder
    (a video_id like '../../x' or '/etc/x') or into a hidden file."""
    name = fill_template(template, row)
    parts = Path(name).parts
    if Path(name).is_absolute() or any(p in ("..", ".") or p.startswith(".") for p in parts) or "\0" in name:
        raise media.MediaError(media.INVALID_ROW, f"--from-template {template!r} gives {name!r} for this row, "
                                                  "which is not a file name inside --from-dir")
    return Path(folder) / name


def check_url(url: str) -> str:
    """The URL when download fetches it (http or https, a host); else MediaError(invalid-row) saying why."""
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number
    except ValueError as e:
        raise media.MediaError(media.INVALID_ROW, f"{url[:200]}: not a valid URL ({e})") from None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise media.MediaError(media.INVALID_ROW, f"{url[:200]}: only http(s) URLs with a host are fetched; put "
                                                  "local files in the path column (or use --from-dir)")
    return url


def cell(v):
    """A manifest cell's value, None when it is missing (None or NaN)."""
    return None if v is None or pd.isna(v) else v
