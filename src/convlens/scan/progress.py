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
)
from rich.text import Text

from ..progress import _console


def _rate(task: Task) -> float | None:
    """Images per second since the scan started (``first``: images already done then, from
    committed shards). Rich's own speed spans its recent updates only, and an engine that
    hands results back in bursts (Ray: two batches within milliseconds, after the actors'
    start) made it thousands of images a second."""
    elapsed = task.elapsed
    done = task.completed - task.fields.get("first", 0)
    return done / elapsed if elapsed and done > 0 else None


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = _rate(task)
        text = "– img/s" if not speed else f"{speed:,.{1 if speed < 10 else 0}f} img/s"
        return Text(text, style="progress.data.speed")


class _Remaining(ProgressColumn):
    """Time left at the scan's average rate."""

    def render(self, task: Task) -> Text:
        speed = _rate(task)
        if task.total is None or not speed:
            return Text("-:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(max(task.total - task.completed, 0) / speed), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


@contextmanager
def scan_progress(total: int | None, enabled: bool, done: int = 0
                  ) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(images)``; ``done`` images (committed shards) count as already read."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
        TimeElapsedColumn(), _Remaining(),
    )
    with Progress(*columns, console=_console) as bar:
        task = bar.add_task("scanning images", total=total, completed=done, first=done)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
