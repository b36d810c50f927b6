"""Log lines that print above the tqdm progress bar instead of through it."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from tqdm import tqdm


class _AboveBarHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover - logging must never break training
            self.handleError(record)


def _is_console(stream) -> bool:
    try:
        return stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def logs_above_bar() -> Iterator[None]:
    """Swap the root logger's console handlers for ones that write through tqdm.write.

    (tqdm's own logging_redirect_tqdm compares handler streams with sys.stderr, which DVCLive's DVC import
    wraps with colorama, so it would leave the original handler in place and print every line twice.)
    """
    root = logging.getLogger()
    swapped = []
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and _is_console(handler.stream):
            replacement = _AboveBarHandler(handler.stream)
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.removeHandler(handler)
            root.addHandler(replacement)
            swapped.append((handler, replacement))
    try:
        yield
    finally:
        for handler, replacement in swapped:
            root.removeHandler(replacement)
            root.addHandler(handler)
