"""The lessons: one module per notebook, each step a call that returns evidence, and the drawings.

    00 doctor          what this host lets the lab do        05 union_fs          layers, copy-up, whiteouts
    01 run_flow        client, socket, daemon, pull, run     06 root_fs           chroot, its escape, pivot_root
    02 client_server   the daemon's socket                   07 vs_vms (+ vm)     one kernel, or a kernel each
    03 namespaces      what a container can see              08 build_your_own    every step of `docker run` by hand
    04 control_groups  how much it can use (+ workloads)     09 security          what root inside may still do

Around them: ``evidence`` (the Step: before, after, the mode; a refusal and the reference recording),
``hosts`` (which kind of host this is, and what a refusal means here), ``diagrams`` (graphviz, drawn to fit
the page), ``display`` (tables of parsed evidence), ``widgets`` (steps behind buttons), ``overlay_model``
(overlayfs on paper, which 05 checks against the kernel), ``dockerd`` and ``localregistry`` (the real Docker
and a real registry, started beside the lab), ``exercises`` (the student writes the step; a check reads the
result back from the kernel, with a hint; nbgrader grades it). Lessons call the runtime and the kernel; nothing
below imports them. A step keeps its facts in ``step.data`` under plain names; the labels are only for its table.

Where is...   the namespace steps: namespaces.isolate_*   copy-up, whiteouts, commit, build: union_fs
              the chroot escape: root_fs.escape_chroot    `labcore run` as one cell: run_flow.run_step
              two servers on port 80: client_server.two_servers_on_port_80
"""
