"""The control plane, attacked through its real API: a server beyond loopback refuses requests without its auth
string and cross-site requests; a deployment run cannot choose another folder, another drop folder, or the gate's
keys; git credentials never reach a deployment or the output; `tuneline stop` kills nothing it did not start."""
from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO, api_client, free_port, make_project, sh, tiny_params, tool_env, tuneline, \
    wait_for_deployments

pytestmark = pytest.mark.integration


def test_a_server_beyond_loopback_requires_its_auth_string_and_refuses_cross_site_requests(tmp_path):
    import httpx

    from tasks.orchestration.prefect_server import is_healthy, wait_healthy

    project = tmp_path / "p"
    project.mkdir()
    port = free_port()
    env = tool_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    started = tuneline(project, env, "serve", "--host", "0.0.0.0", "--port", str(port), "--detach",
                       "--no-deployments", "--project-dir", str(project))
    try:
        url = f"http://127.0.0.1:{port}/api"
        wait_healthy(url, timeout=120)
        auth_file = project / ".tuneline/prefect-auth"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600  # readable by its owner only
        auth = auth_file.read_text().strip()
        assert auth.startswith("tuneline:") and len(auth) > 40 and auth not in started.stdout
        some_flow = "/flows/00000000-0000-0000-0000-000000000000"
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            assert anonymous.get(some_flow).status_code == 401
            assert anonymous.get("/csrf-token", params={"client": "x"}).status_code == 401
            assert anonymous.get(some_flow, auth=("tuneline", "guess")).status_code == 401
            assert anonymous.get(some_flow, auth=tuple(auth.split(":", 1))).status_code == 404  # in: no such flow
            for credentials in (None, tuple(auth.split(":", 1))):  # a state change needs a CSRF token as well
                posted = anonymous.post("/flows/filter", json={}, auth=credentials)
                assert posted.status_code == 403 and "CSRF" in posted.text
            preflight = anonymous.options("/flows/filter", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
            assert preflight.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
        with api_client({"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": auth}) as api:
            assert api.post("/flows/filter", json={}).status_code == 200
        # The CLI reads the project's auth string: `tuneline deploy`/`worker`/`run` need no more than the URL.
        listed = sh(sys.executable, "-c", "from tasks.orchestration.prefect_server import use_stored_auth; "
                    "from pathlib import Path; use_stored_auth(Path('.')); "
                    "from prefect.client.orchestration import get_client\n"
                    "with get_client(sync_client=True) as c: print(len(c.read_flows()))", cwd=project,
                    env={**env, "PREFECT_API_URL": url})
        assert listed.stdout.strip() == "0"
    finally:
        stopped = tuneline(project, env, "stop", "--project-dir", str(project))
        assert "stopped {'server':" in stopped.stdout
    assert not is_healthy(f"http://127.0.0.1:{port}/api", timeout=1)


EVIL_DVC = """stages:
  pwn:
    cmd: touch {marker}
"""


def test_a_deployment_run_cannot_choose_its_folder_drop_folder_or_the_gates_keys(prefect_env, tmp_path,
                                                                                 tiny_model_dir):
    from tasks.orchestration import prefect_server

    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir))
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "pwned"
    (evil / "dvc.yaml").write_text(EVIL_DVC.format(marker=marker))
    (evil / "params.yaml").write_text((project / "params.yaml").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "payroll.csv").write_text("text,sentiment\nsalary data,negative\n")
    log = tmp_path / "serve.log"
    serve = prefect_server.start_serving(project, log, prefect_env)
    try:
        wait_for_deployments(project, prefect_env, ["training/default", "monitoring/scheduled"], serve, log)

        def run(deployment: str, *params: str):
            args = [x for p in params for x in ("--param", p)]
            return sh(sys.executable, "-m", "prefect", "deployment", "run", deployment, *args, "--watch",
                      "--watch-timeout", "120", cwd=project, env=prefect_env, check=False, timeout=180)

        moved = run("training/default", f"project_dir={evil}")
        assert "Failed" in moved.stdout and "is fixed when the deployment is made" in log.read_text()
        gate = run("training/default", 'overrides={"promote.min_delta": -1, "train.epochs": 1}')
        assert "Failed" in gate.stdout
        assert "promote.min_delta: not in control.override_keys" in log.read_text()
        drop = run("monitoring/scheduled", f"drop_dir={elsewhere}")
        assert "Failed" in drop.stdout
        files = run("monitoring/scheduled", f'files=["{elsewhere / "payroll.csv"}"]')
        assert "Failed" in files.stdout
    finally:
        prefect_server.terminate(serve)
    assert not marker.exists()  # the other folder's dvc.yaml never ran
    assert [p.name for p in elsewhere.iterdir()] == ["payroll.csv"]  # nothing was read from or moved out of it
    assert not (project / "models/registry").exists() and not (project / "dvc.lock").exists()  # nothing ran here


class GitHttpBackend(BaseHTTPRequestHandler):
    """`git http-backend` (smart HTTP, shallow clones work) as CGI, recording the Authorization each request sent."""
    root: Path
    seen_auth: list

    def do_GET(self):
        self.cgi()

    def do_POST(self):
        self.cgi()

    def cgi(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.headers.get("Authorization"):  # a private repository: git sends credentials when asked
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.seen_auth.append(self.headers.get("Authorization"))
        env = dict(os.environ, GIT_PROJECT_ROOT=str(self.root), GIT_HTTP_EXPORT_ALL="1", REQUEST_METHOD=self.command,
                   PATH_INFO=path, QUERY_STRING=query, CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER="git", REMOTE_ADDR="127.0.0.1")
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_git_credentials_go_into_a_secret_block_never_into_the_deployment_or_the_output(prefect_env, tmp_path):
    served = tmp_path / "git"
    served.mkdir()
    sh("git", "clone", "-q", "--bare", str(REPO), str(served / "project.git"), cwd=tmp_path)
    handler = type("Handler", (GitHttpBackend,), {"root": served, "seen_auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
       "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem", cwd=tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = "s3cret-t0ken-42"
    url = f"https://deployer:{secret}@127.0.0.1:{server.server_address[1]}/project.git"
    env = {**prefect_env, "GIT_SSL_CAINFO": str(tmp_path / "cert.pem")}
    try:
        plain = tuneline(tmp_path, env, "deploy", "--pool", "git-pool", "--source", url.replace("https:", "http:"),
                         check=False)
        assert plain.returncode == 2 and "credentials are sent over https only" in plain.stderr
        assert secret not in plain.stdout + plain.stderr
        deployed = tuneline(tmp_path, env, "deploy", "--pool", "git-pool", "--source", url)
    finally:
        server.shutdown()
    assert secret not in deployed.stdout + deployed.stderr
    assert "deployed training/git-pool" in deployed.stdout
    sent = {base64.b64decode(a.split()[1]).decode() for a in handler.seen_auth if a}
    assert sent == {f"deployer:{secret}"}  # the clone authenticated with the stored secret
    with api_client(prefect_env) as api:
        deployments = api.post("/deployments/filter", json={"deployments": {"name": {"any_": ["git-pool"]}}}).json()
        blocks = api.post("/block_documents/filter", json={"include_secrets": False}).json()
    assert len(deployments) == 4
    stored = json.dumps(deployments)
    assert secret not in stored and "deployer:" not in stored  # not in pull steps, URLs or anything else
    assert f"127.0.0.1:{server.server_address[1]}/project.git" in stored
    assert "prefect.blocks.secret.tuneline-git-" in stored  # the pull step names the block that holds the token
    assert secret not in json.dumps(blocks)


def test_stop_never_kills_a_process_it_did_not_start(tmp_path):
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        state = tmp_path / ".tuneline"
        state.mkdir()
        (state / "pids.json").write_text(json.dumps({"server": bystander.pid, "serve": 1}))  # a stale record
        stopped = tuneline(tmp_path, tool_env(), "stop", "--project-dir", str(tmp_path))
        assert "stopped nothing" in stopped.stdout and "left alone" in stopped.stdout
        time.sleep(0.5)
        assert bystander.poll() is None  # still running
    finally:
        bystander.kill()
        bystander.wait()


def test_credentials_in_urls_never_reach_the_terminal(tmp_path, tiny_model_dir):
    from tasks.redaction import redact

    assert redact("https://user:pa55@git.example.com/x.git?access_token=abc&ref=main") == \
        "https://***@git.example.com/x.git?access_token=***&ref=main"
    assert redact("Authorization: Bearer eyJ.abc.def and ghp_" + "a" * 36) == "Authorization: Bearer *** and ***"
    project = make_project(tmp_path / "p", tiny_params(tiny_model_dir))
    added = tuneline(project, tool_env(), "remote", "add", "https://reader:pa55word@store.example/data")
    assert "pa55word" not in added.stdout + added.stderr and "https://***@store.example/data" in added.stdout
