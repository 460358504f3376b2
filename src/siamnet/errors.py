"""The one exception family of siamnet.

The command line catches `SiamnetError` only, prints ``siamnet: error: <message>`` and exits
with status 2; any other exception is a bug and keeps its traceback.
"""


class SiamnetError(Exception):
    """A problem the user can fix: bad input, a bad file, a bad argument."""


class DataError(SiamnetError):
    """A data file or folder cannot be read as what it claims to be."""


class CheckpointError(SiamnetError):
    """A file is not a usable siamnet checkpoint (or gallery)."""


class ArgumentError(SiamnetError):
    """An argument or a combination of arguments makes no sense."""
