"""The kernel's side: the mechanisms a container is made of, one module each, and the one door to them.

Everything privileged goes through ``syscalls`` (unshare, setns, mount, pivot_root, ...), which unit tests
replace with a recording fake; anything that changes the calling process's namespaces or root runs in a
child (``process``); every object made is journaled with its undo (``journal``). Nothing here knows of
images, containers or notebooks: those are the layers above.
"""
