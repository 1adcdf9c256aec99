"""Running the explorer: in the foreground (CLI) or in a background thread (notebooks, tests).

The port is bound before anything else, so a port in use is a one-line error, not a traceback
after the address was announced.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import uvicorn

from ..errors import ConvlensError
from .app import create_app

if TYPE_CHECKING:
    from ..models import Model

__all__ = ["BackgroundServer", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port``; a clear ``ConvlensError`` if that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as err:
        sock.close()
        if getattr(err, "errno", None) == errno.EADDRINUSE:
            raise ConvlensError(
                f"port {port} on {host} is already in use (another explorer?); pass another "
                "--port, or stop the program using it"
            ) from None
        raise ConvlensError(
            f"cannot listen on {host}:{port} ({getattr(err, 'strerror', None) or err}); "
            "pass another --host or --port"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    models: Mapping[str, Model] | Model | None = None, *, host: str = "127.0.0.1",
    port: int = 8000, allowed_hosts: Iterable[str] = (), sock: socket.socket | None = None,
    ready: Callable[[str], None] | None = None, **options: Any,
) -> None:
    """Run the explorer until interrupted (binds to ``host``, by default this machine only).

    ``sock``: a socket already bound by :func:`bind` (to ``host``), used instead of binding
    here. ``ready(url)`` is called once the app is built, before serving; ``allowed_hosts`` are
    extra names the server may be reached by (with ``host="0.0.0.0"``: this machine's LAN name).
    """
    sock = sock if sock is not None else bind(host, port)
    try:
        bound = sock.getsockname()[1]
        app = create_app(models, host=host, port=bound, extra_hosts=allowed_hosts, **options)
        if ready is not None:
            ready(url_of(sock) + "/")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        try:
            server.run(sockets=[sock])
        finally:
            app.state.explorer.close()  # a job being computed stops at its next step
    finally:
        sock.close()


class BackgroundServer:
    """The explorer in a daemon thread, on a free port of 127.0.0.1 unless told otherwise.

    >>> with BackgroundServer(model) as server:
    ...     print(server.url)           # http://127.0.0.1:PORT
    ...     with server.model_lock():   # use the served model here too, never at the same time
    ...         model.predict("chelsea")
    """

    def __init__(
        self, models: Mapping[str, Model] | Model | None = None, *, host: str = "127.0.0.1",
        port: int = 0, allowed_hosts: Iterable[str] = (), **options: Any,
    ):
        self._socket = bind(host, port)
        self.host, self.port = self._socket.getsockname()[:2]
        self._url = url_of(self._socket)
        try:
            self.app = create_app(models, host=host, port=self.port,
                                  extra_hosts=allowed_hosts, **options)
        except BaseException:
            self._socket.close()
            raise
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
        return self._url

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
        self.app.state.explorer.close(timeout)
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
