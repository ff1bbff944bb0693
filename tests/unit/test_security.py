"""labcore.lessons.security without a container: how a run's output becomes rows of a step."""
from labcore.lessons import security


def test_the_user_namespace_runs_are_a_row_per_check_whatever_order_the_lines_came_in():
    root = security.by_check("uid_map 0 0 4294967295 | CapEff:\t000001fffeffffff | core_pattern written | "
                             "mknod worked  [exit 0]")
    nobody = security.by_check("uid_map 0 65534 1 | CapEff:\t000001fffeffffff | mknod: /tmp/disk: Operation not "
                               "permitted | sh: can't create /proc/sys/kernel/core_pattern: Permission denied"
                               "  [exit 1]")
    assert list(root) == list(nobody) == ["uid_map", "CapEff", "core_pattern", "mknod", "exit code"]
    assert root["CapEff"] == "CapEff: 000001fffeffffff" and root["exit code"] == "0"
    assert nobody["mknod"] == "mknod: /tmp/disk: Operation not permitted" and nobody["exit code"] == "1"
    assert nobody["core_pattern"].endswith("core_pattern: Permission denied")
