"""Progress bars (Rich) for long runs: one bar per task, on stderr, quiet when asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Callback a long computation calls to advance its bar: ``advance(steps=1)``.
Advance = Callable[[int], None]

_console = Console(stderr=True)


def _noop(steps: int = 1) -> None:
    return None


@contextmanager
def progress_bar(
    description: str, total: int, enabled: bool | Advance = True
) -> Iterator[Advance]:
    """A Rich progress bar; yields ``advance(n=1)``. Disabled bars cost nothing.

    A callable ``enabled`` is yielded instead of a bar (a server reports a job's progress so).
    """
    if callable(enabled):
        yield enabled
        return
    if not enabled:
        yield _noop
        return
    columns = (
        TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(steps: int = 1) -> None:
            bar.advance(task, steps)

        yield advance
