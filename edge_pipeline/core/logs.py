"""Stage logging and progress lines (stderr, so DVC and the flow show them as they come)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def setup_logging(stage: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format=f"%(asctime)s {stage} %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    return logging.getLogger(f"tasks.{stage}")


def progress(
    items: Iterable[T], *, total: int | None, desc: str, every_s: float = 5.0
) -> Iterator[T]:
    """Yield `items`, logging `desc: i/total (rate/s)` every `every_s` seconds and at the end."""
    log = logging.getLogger("tasks.progress")
    start = last = time.perf_counter()
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s:
            last = now
            log.info(
                "%s: %d/%s (%.0f/s)",
                desc,
                i,
                total if total is not None else "?",
                i / (now - start),
            )
    elapsed = time.perf_counter() - start
    log.info("%s: %d done in %.1fs", desc, i, elapsed)
