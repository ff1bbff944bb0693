"""What `./lab hub` decides before JupyterHub starts: ports, who may log in, the students' limits, where the
hub keeps its state. Written to ``<state>/settings.json``; ``jupyterhub_config.py`` reads it.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = Path("/var/lib/labcore-hub")          # the hub's database, cookie secret and journal (root's, 0700)
AUTHENTICATORS = {
    "pam": "the students' Linux accounts and passwords (JupyterHub's default, PAMAuthenticator); with a "
           "roster the accounts are made first",
    "firstuse": "accounts are self-made: the first login to a name sets its password "
                "(jupyterhub-firstuseauthenticator); the hub makes the Linux account, at its start for a "
                "roster's names, at that first login with --open-signup",
}


@dataclass
class Settings:
    root: str = str(ROOT)                     # the lab, installed once for everyone (./lab hub: /opt/labcore)
    state: str = str(STATE)
    bind_url: str = "http://:8000"
    hub_bind_url: str = "http://127.0.0.1:8081"
    proxy_api_url: str = "http://127.0.0.1:8001"
    proxy: str = ""                           # configurable-http-proxy, from npm
    auth: str = "pam"
    group: str = "labcore-class"              # the Unix group the hub lets in (pam), made by the roster
    students: list[str] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)
    open_signup: bool = False                 # firstuse without a roster: anyone may make an account
    limits: dict = field(default_factory=lambda: {"memory": "1g", "cpus": "1", "pids": "512"})
    course_folder: str = "labcore-course"

    def write(self) -> Path:
        state = Path(self.state)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state / "settings.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path


def proxy_command(root: Path = ROOT) -> str:
    """configurable-http-proxy as `./lab` installs it, into the .venv with npm; else one on PATH."""
    local = root / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if os.access(Path(directory, "configurable-http-proxy"), os.X_OK):
            return str(Path(directory, "configurable-http-proxy"))
    return ""


def free_port() -> int:
    """A loopback port the kernel picks: for the tests' hubs, which must not collide with anyone's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_use_authenticator():
    """FirstUseAuthenticator, which keeps the password a student sets at first login, made a
    LocalAuthenticator so that the hub can create that student's Linux account (``add_user_cmd``)."""
    from firstuseauthenticator import FirstUseAuthenticator
    from jupyterhub.auth import LocalAuthenticator

    class LabFirstUseAuthenticator(FirstUseAuthenticator, LocalAuthenticator):
        pass
    return LabFirstUseAuthenticator
