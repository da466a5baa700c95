"""What every worker process (the parser pool, the extraction pool) does first: tie its
life to the process that started it.

Like `models`, `errors` and `files`, a base module any stage may import. A worker must never
outlive the daemon, however the daemon dies: SIGTERM lets the pools stop their workers, but
SIGKILL (or the OOM killer) gives the parent no chance to, and the orphans (one per core,
each tens of MB, plus the multiprocessing resource tracker they keep alive through its pipe)
would be re-parented to PID 1 and live on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), and exit now if
    the parent already died before we asked (then we would never get the signal).

    PR_SET_PDEATHSIG fires when the *thread* that started this process ends, not only the
    process: pools must start workers from threads that live as long as the pool (the
    pipeline's fetch threads, or the main thread), which they do. Elsewhere than Linux the
    workers still exit when their pipe to the parent closes, as before.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the pipe check below remains
            pass
    if os.getppid() != parent_pid:
        os._exit(1)  # orphaned between fork and prctl: the signal will never come
