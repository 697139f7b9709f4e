"""Peak resident memory of this process, for the cost table and the benchmarks."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

__all__ = ["peak_rss_bytes"]

_STATUS = Path("/proc/self/status")


def peak_rss_bytes() -> int:
    """Return the peak resident set size of this process in bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, which starts afresh in a new
    program. ``getrusage``'s ``ru_maxrss`` is not used there because Linux carries it
    across ``exec``: a child started by a large process (a benchmark that has already
    timed big matrices) would report its parent's peak. Elsewhere ``ru_maxrss`` is the
    only source (KiB on Linux and BSD, bytes on macOS).
    """
    if _STATUS.is_file():
        for line in _STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
