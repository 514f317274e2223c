"""Resource usage of this process and of others (the TFF worker), read from Linux's /proc.

Peak memory is the kernel's high-water mark of resident memory (VmHWM). `reset_peak()` restarts
it (writing 5 to /proc/self/clear_refs), so that a run's record states its own peak rather than
that of every run the process made before it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

Pid = Union[int, str]
_TICKS = os.sysconf("SC_CLK_TCK")


def reset_peak() -> bool:
    """Restart this process's peak-RSS counter; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(pid: Pid, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def peak_rss_mb(pid: Pid = "self") -> float | None:
    """Peak resident memory (MB) of a process since it started or since `reset_peak()`."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: Pid = "self") -> float | None:
    """Resident memory (MB) of a process now."""
    return _status_mb(pid, "VmRSS")


def cpu_seconds(pid: Pid) -> float | None:
    """User + system CPU time (s) a process has used so far (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3 of stat(5); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_features() -> list[str]:
    """The CPU's vector-instruction flags (AVX, AVX-512, AMX, FMA, SSE4) from /proc/cpuinfo:
    TensorFlow picks its kernels by them, so results can differ between CPUs that differ here."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "sse4")) or f == "fma")
    except OSError:
        return []
    return []


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
