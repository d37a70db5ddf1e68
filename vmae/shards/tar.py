"""Tar archives with fixed headers, written member by member with their sha256 in the same pass.

Same members, same bytes: mtime 0, uid/gid 0, no user or group names, mode 0644, PAX format.
"""
import hashlib
import os
import tarfile

from vmae.manifests import ManifestError

BLOCK = tarfile.BLOCKSIZE            # 512: tar headers and member data are padded to whole blocks
RECORD = tarfile.RECORDSIZE          # 10240: the archive ends with two zero blocks, padded to a record
COPY_CHUNK = 1 << 20                 # clips are copied in 1 MiB chunks: still in cache between hash and write


def header_bytes(name: str) -> int:
    if len(name) <= 100 and name.isascii():
        return BLOCK
    return len(tarinfo(name, 0).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))


def padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def tar_bytes(member_bytes: int) -> int:
    """Archive size for members totalling member_bytes: two zero blocks, padded to a whole record."""
    return -(-(member_bytes + 2 * BLOCK) // RECORD) * RECORD


def tarinfo(name: str, size: int) -> tarfile.TarInfo:
    # Fixed header fields: the same bytes on every machine, whoever runs it and whenever.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarSink:
    """Writes a tar archive member by member and its sha256 in the same pass.

    Headers come from tarfile (PAX format, fixed fields). A clip copied as it is goes from its file through
    one reused buffer: each chunk is hashed and written while it is still in the CPU cache, so the data is
    read once and no clip-sized buffer is allocated. Reading each clip into a fresh bytes object, or hashing
    on a helper thread, cost more CPU (bench_shard.py; figures in benchmarks/README.md).
    """

    def __init__(self, f):
        self.f, self.pos, self.sha = f, 0, hashlib.sha256()
        self._buf = bytearray(COPY_CHUNK)

    def _write(self, data) -> None:
        self.sha.update(data)
        self.f.write(data)
        self.pos += len(data)

    def _header(self, name: str, size: int) -> int:
        """Write a member's header; return the offset of its data."""
        self._write(tarinfo(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        return self.pos

    def add(self, name: str, data: bytes) -> int:
        """Append a member; return the offset of its data."""
        offset = self._header(name, len(data))
        self._write(data)
        self._write(bytes(padded(len(data)) - len(data)))
        return offset

    def add_file(self, name: str, sample, src) -> int:
        """Append a PlannedSample's input file (open as `src`) as it is; return the offset of its data. The member
        has the planned size: a file that changed size since planning, or cannot be read, stops the shard."""
        size = os.fstat(src.fileno()).st_size
        if size == sample.size:
            offset = self._header(name, size)
            view, left = memoryview(self._buf), size
            while left:
                try:
                    n = src.readinto(view[:min(left, COPY_CHUNK)])
                except OSError as e:
                    raise ManifestError(f"reading the clip failed after {size - left} bytes ({e}); check the "
                                        "disk it is on, then rerun", sample.path, row=sample.key) from None
                if not n:
                    break
                self._write(view[:n])
                left -= n
            size -= left
        if size != sample.size:
            raise ManifestError(f"the clip changed size since planning ({sample.size} -> {size} bytes); "
                                "rerun the command to plan again", sample.path, row=sample.key)
        self._write(bytes(padded(size) - size))
        return offset

    def close(self) -> str:
        """End the archive (two zero blocks, padded to a whole record); return the sha256."""
        self._write(bytes(tar_bytes(self.pos) - self.pos))
        return self.sha.hexdigest()
