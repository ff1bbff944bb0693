"""labcore: what `docker run` really does, done step by step on the Linux kernel.

The package is built in layers, low to high; a module imports only from its own layer or the ones below
(``tests/unit/test_import_direction.py`` keeps it so). Each module is one mechanism and reads as a short lesson.

    labcore.errors, paths, units   the ground: errors that teach, where state lives, Docker's units
    labcore.kernel     the mechanisms, and the one door to the kernel
                       syscalls and netlink (the seams), procfs (every read of /proc), process
                       (children), journal (every object with its undo),
                       userns, namespaces, cgroups/ (v1, v2, limits, devices), overlay, rootfs (pivot_root,
                       /proc /dev /sys), network (veth, bridge), usernet (rootless), portproxy, nat (DNAT, MASQUERADE),
                       capabilities, seccomp, confinement (Docker's defaults, in runc's order)
    labcore.image      images: oci (layers by digest), baseimage (busybox, offline), layers (unpacked
                       once), archive (docker save/load), registry (pulling by digest)
    labcore.runtime    a container's life: spec (what is asked, refused before anything exists),
                       sequence (the one start sequence), container (create, start, wait: walks it), stdio,
                       users, lifecycle (a state machine on disk, and the records), monitor (a detached
                       container's life: its thread in monitord), monitord (one per state directory, every
                       pid 1's parent, as containerd), engine (what clients ask of containers that outlive
                       them), networks + dns, volumes, build,
                       images (rmi, tag, prune: names, and images no container stands on)
    labcore.api        Docker's Engine API: schema (every request checked), routes (Docker's JSON to and
                       from the engine), labd (the daemon's HTTP server), client (the CLI's way to either),
                       wire (HTTP/1.1 on the client's side)
    labcore.lessons    one module per notebook: doctor (00), run_flow (01), client_server (02),
                       namespaces (03), control_groups (04), union_fs (05), root_fs (06), vs_vms (07),
                       build_your_own (08), security (09); and evidence (the Step), hosts (refusals
                       explained), exercises (the student's steps, checked from the kernel), diagrams,
                       display, widgets
    labcore.cli        one `labcore` verb per module, with `docker`'s names and flags; handoff (`labcore
                       run` done by this user's labd, on the command's own stdout and stderr)

Where is...   pivot_root: kernel.rootfs.pivot_to   the memory limit: kernel.cgroups (v1.py, v2.py)
              POST /containers/create: api.routes   `docker run`'s flags: runtime.spec and cli.run
              setns, as `docker exec`: kernel.namespaces.enter_namespaces   the overlay mount: kernel.overlay
              a notebook's step (a Step, its drawing): lessons.<the notebook's module>, e.g. notebook 03's
              isolate_pid in lessons.namespaces, 05's copy-up in lessons.union_fs, 06's chroot escape in
              lessons.root_fs; `labcore run` as one cell: lessons.run_flow.run_step

Importing the package is cheap on purpose (nothing heavy at import time): a container start should cost
about as much as the kernel work it does.
"""
__version__ = "0.1.0"
