"""A class on one VM: JupyterHub serving the lab to many students at once (`./lab hub`).

Each student logs in to JupyterHub and gets a JupyterLab server of their own, running as their own Linux
user, so every container they start is rootless: real namespaces inside a user namespace that maps only
their own uid, a state directory in their home (0710, in a 0700 home) that no other student can enter, a
daemon socket in it that no other student can reach, and their processes signal-proof against everyone
else's (kill(2) needs the same uid). The pieces, in the order a login meets them:

    __main__.py            `./lab hub`: checks, makes the roster's accounts, writes the settings, execs
                           JupyterHub with jupyterhub_config.py
    roster.py              students as local users: one group each, a 0700 home, the class group
    settings.py            ports, authenticator, limits: what the config reads
    jupyterhub_config.py   JupyterHub's own settings for all of it
    spawner.py             LabSpawner: the server as the student, inside their group, course first
    fairness.py            the student's cgroup: memory, CPU and process limits; delegated on cgroup v2
    course.py              the notebooks copied into the home, updated without overwriting the student's
    kernelapi.py           a client of the hub's REST API and of a server's kernel API: log in, start,
                           run a notebook's cells (the load test's, and anyone's smoke test)
    loadtest.py            ten students at once, then a fork bomb and a memory hog (tests/hub)
    k8s/                   the same lab on Zero to JupyterHub: the image and the Helm values
"""
