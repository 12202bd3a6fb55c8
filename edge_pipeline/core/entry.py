"""`run_stage(main)`: what every `tasks/<stage>.py` ends with.

Maps the failures no retry can fix to their own exit statuses (core/errors.py), printing only the
message (it names the key or file and the fix), so the flow fails the run at once with it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from edge_pipeline.core.errors import EXIT_CONFIG, EXIT_INPUT, ConfigError, InputError


def run_stage(main: Callable[[], None]) -> None:
    try:
        main()
    except ConfigError as err:
        logging.getLogger("tasks").error("params error: %s", err)
        sys.exit(EXIT_CONFIG)
    except InputError as err:
        logging.getLogger("tasks").error("input error: %s", err)
        sys.exit(EXIT_INPUT)
