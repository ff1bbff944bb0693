"""User names are the container's: looked up in its /etc/passwd and /etc/group (read here from fake tables)."""
import pytest

from labcore import users
from labcore.errors import BadInput

PASSWD = [["root", "x", "0", "0", "root", "/root", "/bin/sh"], ["postgres", "x", "70", "70", "", "/", "/bin/sh"]]
GROUP = [["root", "x", "0", ""], ["postgres", "x", "70", ""], ["audio", "x", "29", "postgres,other"]]


@pytest.fixture(autouse=True)
def tables(monkeypatch):
    monkeypatch.setattr(users, "read_table", lambda path: PASSWD if path == "/etc/passwd" else GROUP)


@pytest.mark.parametrize("user, expected", [
    ("postgres", (70, 70, [29])), ("70", (70, 70, [29])), ("1000", (1000, 0, [])),
    ("postgres:root", (70, 0, [29])), ("1000:audio", (1000, 29, [])), ("0", (0, 0, [])),
])
def test_names_and_numbers(user, expected):
    assert users.lookup_user(user) == expected


def test_extra_groups_are_added_and_unknown_names_refused_in_dockers_words():
    assert users.lookup_user("postgres", ["1000"]) == (70, 70, [29, 1000])
    with pytest.raises(BadInput, match="unable to find user nobody: no matching entries in passwd file"):
        users.lookup_user("nobody")
    with pytest.raises(BadInput, match="unable to find group wheel"):
        users.lookup_user("0:wheel")
