"""Workloads for the cgroup steps: small programs that use one resource hard, run as their own process.

Run as ``python -I -S workloads.py NAME ARGS...``, stdlib only, so a fresh interpreter starts small and the
memory it uses before joining its group stays charged where it started (memory is charged to the group of
the process that faults a page in: cgroup-v2.rst, "Memory Ownership"). Each waits for one line, ``go``, on
stdin: the parent first moves it into its group, then says go. On anything else (the parent died) it
does nothing. Results are printed as one JSON line; the parent reads them.
"""
import errno
import json
import os
import sys
import time


def hog():
    """Spin on one CPU for ever."""
    while True:
        pass


def alloc(megabytes, hold="0"):
    """Allocate and touch ``megabytes`` MiB, 1 MiB at a time (an untouched page costs nothing); keep it
    for ``hold`` seconds."""
    chunks = []
    for _ in range(int(megabytes)):
        chunks.append(b"\x01" * (1 << 20))
    report(allocated_mb=len(chunks))
    time.sleep(float(hold))


def forks(seconds="30"):
    """Fork children that just sleep, until the kernel refuses; report how many and the errno."""
    children = 0
    while True:
        try:
            pid = os.fork()
        except OSError as err:
            report(forked=children, errno=errno.errorcode.get(err.errno, str(err.errno)))
            time.sleep(float(seconds))      # hold the pids until the parent looks and removes the group
            return
        if pid == 0:
            time.sleep(float(seconds))
            os._exit(0)
        children += 1


def counter():
    """Count, and print the count every 10 ms: the parent sees it stop while the group is frozen."""
    count, last = 0, time.monotonic()
    while True:
        count += 1
        if time.monotonic() - last > 0.01:
            print(count, flush=True)
            last = time.monotonic()


def open_device(path):
    """Try to open a device node for reading and writing; report the errno the kernel gives."""
    try:
        os.close(os.open(path, os.O_RDWR))
        report(opened=True, errno=None)
    except OSError as err:
        report(opened=False, errno=errno.errorcode.get(err.errno, str(err.errno)))


def direct_io(path, megabytes):
    """Write then read ``megabytes`` MiB with O_DIRECT (no page cache, so the disk does each byte)."""
    import mmap
    size, chunk = int(megabytes) << 20, 1 << 18
    buffer = mmap.mmap(-1, chunk)                      # page-aligned, as O_DIRECT requires
    buffer.write(b"\x01" * chunk)
    timings = {}
    for mode, flags in (("write", os.O_WRONLY | os.O_CREAT), ("read", os.O_RDONLY)):
        fd = os.open(path, flags | os.O_DIRECT, 0o600)
        start = time.monotonic()
        for offset in range(0, size, chunk):
            (os.pwritev if mode == "write" else os.preadv)(fd, [buffer], offset)
        os.fsync(fd)
        timings[mode] = time.monotonic() - start
        os.close(fd)
    report(bytes=size, **{f"{mode}_seconds": t for mode, t in timings.items()})


def report(**values):
    print(json.dumps(values), flush=True)


if __name__ == "__main__":
    if sys.stdin.readline() == "go\n":
        globals()[sys.argv[1]](*sys.argv[2:])
