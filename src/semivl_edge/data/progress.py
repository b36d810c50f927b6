"""Progress bars for the long loops over images."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from tqdm import tqdm


def progress_bar(desc: str) -> Callable[[Iterable, int], Iterator]:
    """A wrapper `(iterable, total) -> iterator` that shows a bar on a terminal and nothing in captured output."""
    return lambda iterable, total: iter(tqdm(iterable, total=total, desc=desc, unit="img", disable=None))
