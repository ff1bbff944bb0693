"""JupyterHub's configuration for a class (`jupyterhub -f tools/hub/jupyterhub_config.py`), from the settings
that `./lab hub` wrote (``tools.hub.settings``; the file named by LABCORE_HUB_SETTINGS).

Every key is JupyterHub's own (https://jupyterhub.readthedocs.io, "Configuration reference"); what the lab
adds is the spawner (``tools.hub.spawner.LabSpawner``), the students' limits, and the course.
"""
import json
import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 -- defined by JupyterHub when it loads this file

settings = json.loads(Path(os.environ["LABCORE_HUB_SETTINGS"]).read_text())
ROOT = Path(settings["root"])
sys.path.insert(0, str(ROOT))                      # tools.hub, from the lab's system-wide copy
from tools.hub import settings as hub_settings  # noqa: E402
from tools.hub.fairness import Fairness, class_limits  # noqa: E402
from tools.hub.spawner import LabSpawner  # noqa: E402

state = Path(settings["state"])
venv = ROOT / ".venv"

# Where it listens: the proxy is the only public door; the hub's own API and the proxy's stay on loopback.
c.JupyterHub.bind_url = settings["bind_url"]
c.JupyterHub.hub_bind_url = settings["hub_bind_url"]
c.ConfigurableHTTPProxy.api_url = settings["proxy_api_url"]
c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
c.JupyterHub.cleanup_servers = True                # the hub stopping stops every student's server

# Each student: their own server, as themselves, in their own limited group, with the course in their home.
c.JupyterHub.spawner_class = LabSpawner
c.LabSpawner.fairness = Fairness(state, class_limits(**settings["limits"]))
c.LabSpawner.labcore = str(venv / "bin" / "labcore")
c.Spawner.cmd = [str(venv / "bin" / "python"), str(ROOT / "tools" / "hub" / "course.py"),
                 "--course", str(ROOT / "notebooks"), "--into", settings["course_folder"], "--",
                 str(venv / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = f"/lab/tree/{settings['course_folder']}/00-start-here.ipynb"
c.Spawner.environment = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Ten servers starting at once on two CPUs take longer than JupyterHub's defaults allow.
c.Spawner.start_timeout = c.Spawner.http_timeout = 180

# Who may log in (hub_settings.AUTHENTICATORS says what each one is for).
c.Authenticator.admin_users = set(settings["admins"])
if settings["auth"] == "pam":
    c.JupyterHub.authenticator_class = "pam"
    c.PAMAuthenticator.allowed_groups = {settings["group"]}
    # The roster's names too: the hub then knows them from its start, so they may also log in through the
    # REST API (POST /hub/api/users/NAME/tokens), which accepts only users the hub has seen.
    c.Authenticator.allowed_users = set(settings["students"])
else:
    c.JupyterHub.authenticator_class = hub_settings.first_use_authenticator()
    c.LocalAuthenticator.create_system_users = True
    c.LocalAuthenticator.add_user_cmd = [str(venv / "bin" / "python"), str(ROOT / "tools" / "hub" / "roster.py"),
                                         "add", "--group", settings["group"]]
    c.FirstUseAuthenticator.dbm_path = str(state / "passwords.dbm")
    c.Authenticator.allowed_users = set(settings["students"])
    c.Authenticator.allow_all = settings["open_signup"]
