"""SIGINT and SIGTERM as a StopRequest the training loop looks at between two steps."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

# ------------------------------------------------------------------------------- signals


@contextmanager
def stop_on_signals():
    """A StopRequest that SIGINT and SIGTERM set while training (restored afterwards).

    During :func:`fastnet.training.loop.fit`'s loop the first signal only sets the request, so the
    step in flight finishes and is checkpointed; outside it (loading data, writing the
    outputs), or at a second signal, :class:`fastnet.training.state.Interrupted` is raised at once.
    Signals ignored by the parent (``nohup``) stay ignored; outside the main thread nothing is
    installed (Python allows handlers only there) and Ctrl-C behaves as usual.
    """
    from fastnet.training.state import Interrupted, StopRequest

    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.deferring and stop.signum is None:
            stop.signum = signum
            return
        raise Interrupted(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
