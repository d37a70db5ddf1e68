"""Errors that point at the file, the row and the fix."""


class ManifestError(ValueError):
    """A bad input file or row: the message names the file, the row and how to fix it."""

    def __init__(self, message: str, path=None, row=None):
        where = f"{path}" if path is not None else ""
        if row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.row = path, row
