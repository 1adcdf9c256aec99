"""The scan's progress bar: images done, images per second, time left (Rich, on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..progress import _console


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "– img/s", style="progress.data.speed")


@contextmanager
def scan_progress(total: int | None, enabled: bool, done: int = 0
                  ) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(images)``; ``done`` images (committed shards) count as already read."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console) as bar:
        task = bar.add_task("scanning images", total=total, completed=done)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
