"""The two failures a retry cannot fix, and the exit statuses that tell the flow so.

A stage that exits with `EXIT_CONFIG` (a params.yaml mistake) or `EXIT_INPUT` (bad input data) is
failed at once by the flow; any other non-zero status (a crash, a timeout, a lock held by another
DVC process) may pass on a second try and is retried as configured. Values from sysexits.h.
"""

from __future__ import annotations

EXIT_INPUT = 65  # EX_DATAERR: the input data is wrong (a file, a row, a label)
EXIT_CONFIG = 78  # EX_CONFIG: a params.yaml key or value is wrong
PERMANENT_EXITS = frozenset({EXIT_INPUT, EXIT_CONFIG})


class ConfigError(ValueError):
    """A params.yaml value is missing or invalid; the message names the key and the fix."""


class InputError(ValueError):
    """An input file is unusable; the message names the file (and line) and the fix."""
