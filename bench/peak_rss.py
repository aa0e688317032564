"""Wall time, CPU time and peak RSS of one whole child process, for the benchmarks.

A child's peak RSS cannot be read from the parent's wait4(): Linux carries the parent's high-water mark into
the forked child and keeps it across exec, so a 2 GB benchmark would see 2 GB for every child. GNU time
(`/usr/bin/time`, Debian package "time") is a tiny parent of its own, and reports the child's real peak.
CPU time (user + system) is reported beside the wall time: on a machine shared with other jobs the wall
time of a short process mostly measures the neighbours, its CPU time much less so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"


def measure(args: list[str], env: dict | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS in MB, CPU seconds, what it printed) of ``args``; exits the benchmark if it
    fails."""
    if not os.access(TIME, os.X_OK):
        sys.exit("the peak-RSS measurements need GNU time at /usr/bin/time (apt install time)")
    with tempfile.NamedTemporaryFile("r") as peak, tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        result = subprocess.run([TIME, "-f", "%M %U %S", "-o", peak.name, *args], env=env, stdout=output,
                                stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        output.seek(0)
        printed = output.read()
        if result.returncode:
            sys.exit(f"{' '.join(args)} failed ({result.returncode}):\n{printed[-3000:]}")
        kilobytes, user, system = peak.read().split()[-3:]
        return wall, int(kilobytes) / 1024, float(user) + float(system), printed
