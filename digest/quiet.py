"""Loading torch, onnxruntime and transformers without their noise: a progress bar journald stores as a blob,
cpuinfo's false alarms where /proc/cpuinfo cannot be read. Both embedders use it; it imports nothing of ours."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile


def quiet_third_party() -> None:
    """Before transformers loads a model: its "Loading weights" bar (and huggingface_hub's download bars)
    redraw with carriage returns, which journald stores as a blob. Shown on a terminal only."""
    if sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub and transformers load
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def import_quietly(name: str):
    """Import torch or onnxruntime where /proc/cpuinfo cannot be read (systemd's ProcSubset=pid). Both
    bundle the cpuinfo library, which then prints "Error in cpuinfo: failed to parse processor
    information", and onnxruntime adds three warnings, all at import. They are false alarms for what digest
    runs: the matrix kernels detect the CPU by themselves, and onnxruntime embedded as fast without
    /proc/cpuinfo as with it. So those lines are dropped; anything else the import prints goes through."""
    if name in sys.modules or os.access("/proc/cpuinfo", os.R_OK):
        return importlib.import_module(name)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as printed:
        os.dup2(printed.fileno(), 2)  # the C libraries write to the file descriptor, not to sys.stderr
        try:
            return importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            printed.seek(0)
            for line in printed.read().decode(errors="replace").splitlines():
                if "cpuinfo" not in line and "CPU vendor" not in line:
                    print(line, file=sys.stderr)
