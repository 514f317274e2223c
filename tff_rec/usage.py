"""Resource usage of this process and of others (the TFF worker), through psutil.

psutil gives current resident memory, CPU time and child processes portably. Two things it
does not give on Linux stay Linux-only reads and writes of /proc, each guarded (None or False
elsewhere, or where the kernel refuses):

- the peak of resident memory: the kernel's high-water mark VmHWM (/proc/<pid>/status) — psutil
  reports a peak only on Windows (`peak_wset`), which is used there;
- its reset: `reset_peak()` writes 5 to /proc/self/clear_refs (psutil has no call for it), so
  that a run's record states its own peak rather than that of every run the process made before.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Optional, Union

import psutil

Pid = Union[int, str]
_MB = 1024 * 1024


def reset_peak() -> bool:
    """Restart this process's peak-RSS counter; False where the kernel does not allow it
    (not Linux, or /proc/self/clear_refs not writable)."""
    if not psutil.LINUX:  # clear_refs is Linux's; psutil cannot reset the high-water mark
        return False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _process(pid: Pid) -> Optional[psutil.Process]:
    """The process `pid` ("self": this one), or None when it does not exist or is not ours to read."""
    try:
        return psutil.Process(os.getpid() if pid == "self" else int(pid))
    except (psutil.Error, ValueError):
        return None


def _memory(pid: Pid) -> Optional[Any]:
    """psutil's memory_info() of a process, or None."""
    process = _process(pid)
    try:
        return None if process is None else process.memory_info()
    except psutil.Error:
        return None


def _high_water_mark(pid: Pid) -> Optional[int]:
    """VmHWM (bytes) of /proc/<pid>/status: Linux's peak RSS, the one clear_refs resets."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb(pid: Pid = "self") -> float | None:
    """Peak resident memory (MB) of a process since it started or since `reset_peak()`.

    Linux: the kernel's high-water mark (VmHWM); elsewhere psutil's peak where it reports one
    (`peak_wset` on Windows), else None.
    """
    if psutil.LINUX:
        peak = _high_water_mark(pid)
    else:
        memory = _memory(pid)
        peak = None if memory is None else getattr(memory, "peak_wset", None)
    return None if peak is None else round(peak / _MB, 1)


def rss_mb(pid: Pid = "self") -> float | None:
    """Resident memory (MB) of a process now."""
    memory = _memory(pid)
    return None if memory is None else round(memory.rss / _MB, 1)


def cpu_seconds(pid: Pid) -> float | None:
    """User + system CPU time (s) a process has used so far (not its children)."""
    process = _process(pid)
    try:
        times = None if process is None else process.cpu_times()
    except psutil.Error:
        return None
    return None if times is None else times.user + times.system


def children(pid: Pid = "self", name: Optional[str] = None) -> list[int]:
    """PIDs of a process's live (not zombie) direct children, those named `name` if given."""
    process = _process(pid)
    found = []
    try:
        kids = [] if process is None else process.children()
    except psutil.Error:
        return []
    for child in kids:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and (name is None or child.name() == name):
                found.append(child.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return found


def cpu_features() -> list[str]:
    """The CPU's vector-instruction flags (AVX, AVX-512, AMX, FMA, SSE4) from /proc/cpuinfo:
    TensorFlow picks its kernels by them, so results can differ between CPUs that differ here.
    (psutil does not report CPU flags; empty where /proc/cpuinfo does not exist.)"""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "sse4")) or f == "fma")
    except OSError:
        return []
    return []


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (psutil does not report it); elsewhere the
    platform's processor string, or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return platform.processor() or None
    return None
