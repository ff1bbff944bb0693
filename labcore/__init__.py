"""labcore: what `docker run` really does, done step by step on the Linux kernel.

Each module is one mechanism and reads as a short lesson. In the order a container is made:

    the kernel's side
        syscalls      the narrow door to unshare, setns, mount, pivot_root, ...      (start here)
        process       children: where each isolating step happens
        userns        root inside, an ordinary user outside
        namespaces    what a container can see: pid, uts, mnt, net, ipc, user, cgroup
        cgroups/      how much it can use: cpu, memory, pids, io, devices, freezer (v1 and v2)
        rootfs        which files it sees: chroot, its escape, pivot_root, /proc /dev /sys
        overlay       one copy of the image for many containers; overlay_model predicts it
        network       a bridge, a veth pair, an address; portproxy publishes a port
        usernet       the same without root: a bridge in a namespace you own, slirp4netns its way out
        networks      user-defined networks: a bridge and a subnet each; dns: names at 127.0.0.11
    images
        images        layers kept by digest in an OCI layout; baseimage builds busybox offline
        layers        each layer unpacked once; archive loads and saves what Docker and Podman write
        registry      pulling by digest; localregistry runs a real one on loopback
        build         commit and build, with Docker's layer cache
    the runtime
        spec          what `docker run` is asked, refused before anything exists
        container     a command as pid 1 on an image's root: create, start, wait; stdio: its fds 0-2
        lifecycle     created, running, paused, exited, dead: a state machine on disk
        engine        containers that outlive their caller; daemon and dockerapi serve Docker's API
        client        the CLI's way to the engine, in this process or over labd's socket
    around it
        journal       every object created is written down with its undo
        evidence      what a step returns: before, after, and the mode it ran in
        doctor        what this host lets the lab do, and why not
        flow, unixsocket, assemble, compare, vm       the notebooks' steps: the `docker run` flow, the
                      daemon's socket, a container built by hand, containers beside a virtual machine
        diagrams, display, widgets                     what a reader sees: pictures that fit the page,
                      tables of parsed evidence, folded details, steps behind buttons

Importing the package is cheap on purpose (nothing heavy at import time): a container start should cost
about as much as the kernel work it does.
"""
__version__ = "0.1.0"
