"""Containers started from several threads of one process (labd serves each request on a thread)."""
import concurrent.futures

from labcore.runtime.container import Spec, run
from tests.conftest import privileged

pytestmark = privileged


def test_eight_threads_each_run_a_container_and_all_finish(busybox_image):
    """Each fork inherits every fd open at that instant, including the channels and output pipes another
    thread has just made for its own container; if a child kept them, that container would never be seen
    to start or to end (process.close_inherited_fds)."""
    def one(i):
        return run(Spec("busybox", ["sh", "-c", f"sleep 0.3; echo {i}"], rm=True, network="none"))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8), timeout=60))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(8)]
    assert all(r.exit_code == 0 for r in results)
