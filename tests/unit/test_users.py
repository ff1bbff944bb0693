"""User names are the container's: looked up in its /etc/passwd and /etc/group (here a fake image root)."""
import pytest

from labcore.errors import BadInput
from labcore.runtime import users

PASSWD = "root:x:0:0:root:/root:/bin/sh\npostgres:x:70:70::/:/bin/sh\n"
GROUP = "root:x:0:\npostgres:x:70:\naudio:x:29:postgres,other\n"


@pytest.fixture
def image_root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize("user, expected", [
    ("postgres", (70, 70, (70, 29))), ("70", (70, 70, (70, 29))), ("1000", (1000, 0, (0,))),
    ("postgres:root", (70, 0, (0, 29))), ("1000:audio", (1000, 29, (29,))), ("0", (0, 0, (0,))),
])
def test_names_and_numbers(image_root, user, expected):
    identity = users.resolve(user, image_root)
    assert (identity.uid, identity.gid, identity.groups) == expected


def test_extra_groups_are_added_and_unknown_names_refused_in_dockers_words(image_root):
    assert users.resolve("postgres", image_root, ["1000", "audio"]).groups == (70, 29, 1000)
    with pytest.raises(BadInput, match="unable to find user nobody: no matching entries in passwd file"):
        users.resolve("nobody", image_root)
    with pytest.raises(BadInput, match="unable to find group wheel"):
        users.resolve("0:wheel", image_root)
