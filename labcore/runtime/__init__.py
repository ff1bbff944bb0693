"""The runtime: a container's life, from `docker run`'s words to its exit code.

``spec`` checks what is asked and resolves it against the image before anything exists; ``container``
makes and starts one (the shim, pid 1, its root, its confinement); ``engine`` keeps containers running
after their caller has gone, with ``lifecycle`` (the state machine on disk), ``jsonfile`` (the log),
``containerfs`` (diff and copy), ``volumes``, ``networks`` and ``dns``; ``build`` is commit and build.
Built on ``labcore.image`` and ``labcore.kernel``.
"""
