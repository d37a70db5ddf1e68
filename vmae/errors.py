"""The errors a user reads.

Every error meant for a user (a bad option, input file or row, a full or read-only disk, a folder that belongs
to another run, an unusable checkpoint) derives from `VmaeError`; its message names the file or option and the
fix. The CLI prints these without a traceback; any other exception is a bug and keeps its traceback.
"""


class VmaeError(Exception):
    """A problem the user can fix; the message says which file or option, and how."""


class ConfigError(VmaeError, ValueError):
    """A bad option or combination of options, found before any work starts (a usage error)."""
