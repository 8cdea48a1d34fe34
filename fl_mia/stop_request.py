"""A process-wide request to stop the federation: set by the first Ctrl-C or SIGTERM.

Python delivers signals to the main thread only, while Flower runs the ServerApp in a thread
of its own that waits on hospitals' replies. Raising in the main thread leaves that thread
waiting for replies that never come (Flower's executor then waits for it on exit), so the
signal handler only sets this flag, and the server's grid reads it between pulls and ends
the federation with :class:`FederationStopped` at the next message.
"""

from __future__ import annotations

import threading


class FederationStopped(RuntimeError):
    """The federation ended early because the process was asked to stop (Ctrl-C, SIGTERM)."""


class StopRequest:
    """Set once per process by a signal handler; cleared when a new run starts."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def clear(self) -> None:
        self.reason = None
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise FederationStopped(f"stopped by {self.reason}")


STOP = StopRequest()
