"""labcore: what `docker run` really does, done step by step on the Linux kernel.

Each module is one kernel mechanism and reads as a short lesson:

    syscalls      the narrow door to unshare, setns, mount, pivot_root, ...   (start here)
    process       children: where each isolating step happens
    namespaces    what a container can see: pid, uts, mnt, net, ipc, user, cgroup
    cgroups       how much it can use: cpu, memory, pids, io, devices, freezer
    rootfs        which files it sees: chroot, its escape, pivot_root
    container     a command as pid 1 on an image's root: create, start, wait
    images        image layers in OCI layout; the busybox base image
    journal       every object created is written down with its undo
    evidence      what a step returns: before, after, and the mode it ran in
    doctor        what this host lets the lab do, and why not

Importing the package is cheap on purpose (nothing heavy at import time): a container start should cost
about as much as the kernel work it does.
"""
__version__ = "0.1.0"
