"""Images: a root filesystem in layers, kept by digest, unpacked once, loaded, saved and pulled.

``oci`` is the store (an OCI image layout); ``baseimage`` builds busybox from the host, offline; ``layers``
unpacks each layer once for every container to share; ``archive`` reads and writes `docker save` files and
OCI layouts; ``registry`` pulls over the OCI distribution API. Built on ``labcore.kernel``.
"""
