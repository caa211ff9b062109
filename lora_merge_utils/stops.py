"""Stopping a command cleanly: Ctrl-C and SIGTERM raised where the command is, so that it ends as a stopped command
(saved work kept, one line, no traceback) even where C code or the garbage collector would lose the signal.

The command line (``python -m lora_merge_utils``) installs a :class:`StopHandler` around each command and reports
:attr:`StopHandler.signum` as the way the command ended.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it stops as on Ctrl-C: saved work kept, one line, no traceback."""


class StopHandler:
    """Ctrl-C and SIGTERM while a command runs: raised where the command is, remembered, and raised again if dropped.

    Remembered, because a signal's exception can land inside C code that turns it into an error of its own: the
    command was still stopped, and should say so. Raised again, because one that lands in a ``__del__`` or a weakref
    callback (the garbage collector runs them anywhere) is dropped by Python, and the command would carry on to its
    end.

    Example (a command that is not stopped):
        >>> stop = StopHandler()
        >>> previous = stop.install()
        >>> stop.disarm(); stop.restore(previous)
        >>> stop.signum is None and not stop.dropped
        True
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        """The signal that stopped the command, if one did."""
        self._armed = False  # raise on a signal; off once the command has ended, so the way out is not interrupted
        self._dropped_stop = False  # a stop Python dropped, not raised again yet
        self._lock = threading.Lock()  # between the thread raising a dropped stop again and disarm()
        self._unraisablehook = sys.unraisablehook

    @property
    def dropped(self) -> bool:
        """Whether a stop was dropped by Python and the command ended before it could be raised again."""
        return self._dropped_stop

    def install(self) -> dict[int, object] | None:
        """Take over SIGINT and SIGTERM and ``sys.unraisablehook`` (main thread only; a signal the caller ignores
        stays ignored, and one C code handles stays with it); returns the handlers to restore."""
        if threading.current_thread() is not threading.main_thread():
            return None
        signums = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (signal.SIG_IGN, None)]
        self._armed, self._unraisablehook, sys.unraisablehook = True, sys.unraisablehook, self._on_unraisable
        return {signum: signal.signal(signum, self._raise) for signum in signums}

    def disarm(self) -> None:
        """The command has ended: a signal from now on is remembered, not raised, and nothing is raised again."""
        with self._lock:
            self._armed = False

    def restore(self, previous: dict[int, object] | None) -> None:
        """Disarm, and put back the handlers and the hook :meth:`install` replaced."""
        if previous is None:
            return
        self.disarm()
        sys.unraisablehook = self._unraisablehook
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _raise(self, signum: int, frame: object) -> None:
        self.signum, self._dropped_stop = signum, False
        if self._armed:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _on_unraisable(self, unraisable) -> None:
        """``sys.unraisablehook``: our stop, dropped where no exception can leave, is raised again in the main thread,
        from another thread and a moment later, so that it lands after this hook has returned (raised in here, it
        would be dropped too); anything else goes to the hook there was."""
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and self._armed and self.signum is not None):
            self._unraisablehook(unraisable)
            return
        self._dropped_stop = True

        def again(signum: int = self.signum) -> None:
            time.sleep(0.05)
            with self._lock:
                if self._armed and self._dropped_stop:
                    # runs our handler in the main thread; with no Python handler there it does nothing (never kills)
                    _thread.interrupt_main(signum)

        threading.Thread(target=again, daemon=True).start()
