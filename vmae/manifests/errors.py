"""Errors that point at the file, the row and the fix."""
from vmae.errors import VmaeError


class ManifestError(VmaeError, ValueError):
    """A bad input file or row: the message names the file, the line or row, and how to fix it."""

    def __init__(self, message: str, path=None, row=None, line=None):
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path, self.row, self.line = path, row, line
