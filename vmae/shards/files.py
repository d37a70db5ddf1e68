"""Opening a shard set's files wherever they are kept, and reading the samples of a shard or of a byte range.

URLs go through fsspec: local paths, `file:`, http(s), and `s3://`, `gs://`, ... once the user has installed
that filesystem's package (s3fs, gcsfs, ...). webdataset's `pipe:COMMAND` URLs run the command and read its
output; a range of a pipe is read by discarding the bytes before it (a pipe cannot seek).
"""
import shlex
import tarfile

import fsspec
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

READ_ERRORS = (OSError, tarfile.TarError, ValueError)


def is_pipe(url: str) -> bool:
    return url.startswith("pipe:")


def _fsspec_url(url: str) -> str:
    # webdataset writes local files as `file:PATH`; fsspec wants `file://PATH` or a bare path
    return url[5:] if url.startswith("file:") and not url.startswith("file://") else url


def file_url(url: str) -> str | None:
    """The URL of the file itself; for a `pipe:` command the last argument naming a .tar file (the shard the
    command reads), None when no argument does."""
    if not is_pipe(url):
        return url
    names = [word for word in shlex.split(url[5:]) if ".tar" in word]
    return names[-1] if names else None


def file_name(url: str) -> str:
    path = file_url(url) or url
    return path.rstrip("/").rsplit("/", 1)[-1]


def sibling_url(url: str, name: str) -> str | None:
    """The URL of file `name` in the folder of `url` (of the file a pipe reads); None if that is unknown."""
    path = file_url(url)
    if path is None:
        return None
    return f"{path.rsplit('/', 1)[0]}/{name}" if "/" in path else name


def open_file(url: str):
    """A binary file object for reading `url` (seekable unless it is a pipe)."""
    if is_pipe(url):
        return gopen(url, "rb")
    return fsspec.open(_fsspec_url(url), "rb").open()


class _Window:
    """Reads at most `size` bytes of `stream`, then reports the end; closing it closes the stream."""

    def __init__(self, stream, size: int, url: str):
        self.stream, self.left, self.url = stream, size, url

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.stream.close()

    def __str__(self) -> str:
        return self.url


def open_range(url: str, start: int = 0, stop: int | None = None):
    """A stream of bytes [start, stop) of `url` (to the end when stop is None), read sequentially."""
    stream = open_file(url)
    if start and not is_pipe(url):
        stream.seek(start)
    elif start:
        left = start
        while left:
            chunk = stream.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
    return stream if stop is None else _Window(stream, stop - start, url)


def tar_samples(url: str, start: int = 0, stop: int | None = None, handler=None):
    """The samples (webdataset dicts of member bytes) in bytes [start, stop) of a tar shard, the whole shard by
    default. `handler(error)` sees read errors (they end the shard); without one they are raised."""
    try:
        stream = open_range(url, start, stop)
    except READ_ERRORS as err:
        if handler is None:
            raise
        handler(f"{url}: {err}")
        return
    kwargs = {} if handler is None else {"handler": handler}
    try:
        yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}], **kwargs), **kwargs)
    finally:
        stream.close()
