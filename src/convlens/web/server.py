"""Running the explorer: in the foreground (CLI) or in a background thread (notebooks, tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import uvicorn

from ..errors import ConvlensError
from .app import create_app

if TYPE_CHECKING:
    from ..models import Model

__all__ = ["BackgroundServer", "serve"]


def serve(
    models: Mapping[str, Model] | Model | None = None, *, host: str = "127.0.0.1",
    port: int = 8000, **options: Any,
) -> None:
    """Run the explorer until interrupted (binds to ``host``, by default this machine only)."""
    app = create_app(models, **options)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.jobs.close()  # a gallery being computed stops at its next step


class BackgroundServer:
    """The explorer in a daemon thread, on a free port of 127.0.0.1 unless told otherwise.

    >>> with BackgroundServer(model) as server:
    ...     print(server.url)           # http://127.0.0.1:PORT
    ...     with server.model_lock():   # use the served model here too, never at the same time
    ...         model.predict("chelsea")
    """

    def __init__(
        self, models: Mapping[str, Model] | Model | None = None, *, host: str = "127.0.0.1",
        port: int = 0, **options: Any,
    ):
        self.app = create_app(models, **options)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
            name="convlens-explorer",
        )

    def model_lock(self, name: str | None = None) -> threading.Lock:
        """The lock the explorer holds while it runs model ``name`` (default: the first).

        A model must not run in two threads at once (its hooks would see both passes): hold this
        lock to use a served model outside the explorer while it runs.
        """
        slots = self.app.state.slots
        return slots[name if name is not None else next(iter(slots))].lock

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConvlensError(f"the explorer did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.app.state.jobs.close(timeout)
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
