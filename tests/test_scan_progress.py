"""The scan's progress bar: its rate and time left are the scan's average, not a burst's."""

from __future__ import annotations

from rich.progress import Progress

from convlens.scan.progress import _Rate, _Remaining


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shown(progress: Progress, task_id: int) -> tuple[str, str]:
    task = progress.tasks[task_id]
    return _Rate().render(task).plain, _Remaining().render(task).plain


def test_a_burst_after_a_slow_start_shows_the_average_rate():
    clock = Clock()
    progress = Progress(get_time=clock, disable=True)
    task = progress.add_task("scanning images", total=128, completed=0, first=0)
    assert shown(progress, task) == ("– img/s", "-:--:--")  # nothing done yet
    clock.now = 19.0  # the Ray actors took 19 s to start; then two batches within 20 ms
    progress.advance(task, 32)
    clock.now = 19.02
    progress.advance(task, 32)
    # 64 images in 19.02 s: 3.4 a second (Rich's own speed: 32 / 0.02 s = 1,600), and the other
    # 64 at that rate take 19 s
    assert progress.tasks[task].speed > 1_000
    assert shown(progress, task) == ("3.4 img/s", "0:00:19")


def test_a_resumed_scan_counts_only_the_images_of_this_run():
    clock = Clock()
    progress = Progress(get_time=clock, disable=True)
    # 1,024 images were committed by the interrupted run; 2,048 in all
    task = progress.add_task("scanning images", total=2048, completed=1024, first=1024)
    clock.now = 8.0
    progress.advance(task, 512)
    # 512 in 8 s: 64 a second, and 512 left: 8 s
    assert shown(progress, task) == ("64 img/s", "0:00:08")
