"""`./lab hub --auth firstuse`: accounts made by the students themselves. The hub makes each roster name's Linux
account (``roster.py add``: a group of its own, a 0700 home, the class group, its password locked), the first
login to a name sets its password, and a later login with another password is refused."""
import asyncio
import importlib.util
import os
import pwd
import subprocess

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import privileged
from tools.hub import loadtest
from tools.hub.settings import proxy_command

pytestmark = [pytest.mark.hub, privileged,
              pytest.mark.skipif(importlib.util.find_spec("firstuseauthenticator") is None,
                                 reason="jupyterhub-firstuseauthenticator is not installed (pyproject's test)"),
              pytest.mark.skipif(not proxy_command(), reason="configurable-http-proxy not found: ./lab test "
                                                             "installs it with npm (apt-get install npm)")]


async def log_in(the_class, name, password):
    session = the_class.session(name)
    await session.login(password)
    return session


def test_the_first_login_sets_the_password_and_the_account_is_private():
    with loadtest.Class(1, auth="firstuse") as the_class:
        name, chosen = the_class.names[0], the_class.passwords[the_class.names[0]]
        account = pwd.getpwnam(name)                         # made by the hub at its start, from the roster
        assert os.stat(account.pw_dir).st_mode & 0o777 == 0o700
        assert subprocess.run(["passwd", "--status", name], capture_output=True, text=True).stdout.split()[1] == "L"
        assert asyncio.run(log_in(the_class, name, chosen)).token
        with pytest.raises(HTTPClientError) as refused:
            asyncio.run(log_in(the_class, name, chosen + "-not"))
        assert refused.value.code == 403
        assert asyncio.run(log_in(the_class, name, chosen)).token
    assert the_class.left_behind() == []
