"""A helper process that ends with the process that started it, however that one ends (SIGKILL included).

Called first thing in compress's helper processes: the second process of `compress quantize` (compress.steps.ahead)
and the local workers of `compress tune` / `compress fleet` (compress.tune.executors).

Example:
    >>> die_with_parent(int(sys.argv[2]))   # python -m compress.steps.ahead WRITER_FD PARENT_PID
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal this process gets when the thread that started it ends


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the pid that started it) ends.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``; compress starts its helpers
    from the main thread, whose end is the process's end); a parent that died before that was set is seen as a changed
    parent pid. Elsewhere a daemon thread watches the parent pid once a second.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the signal was set (this process was handed to init)
        os._exit(0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)
