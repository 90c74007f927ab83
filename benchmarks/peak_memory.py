"""Peak resident memory of this process, for the benchmark scripts."""

import resource
from pathlib import Path


def peak_rss_mb():
    """The process's peak resident set (Linux VmHWM), in MB.

    Not `ru_maxrss`: Linux carries it across execve, so a subprocess started from a
    large parent reports the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
