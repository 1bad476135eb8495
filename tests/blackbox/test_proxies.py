"""authd in front of services, from the outside: a real nginx with
`auth_request` in front of a small upstream, Envoy's ext_authz `Check`
found by reflection and called with grpcurl, and the Python and Node
snippets of docs/clients.md run as they are written there."""

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_blackbox import (  # noqa: F401 (database, pb: fixtures)
    GRPCURL, PASSWORD, ROOT, Authd, cli, database, free_port, grpcurl, http_get, pb,
)

CLIENTS_GUIDE = ROOT / "docs" / "clients.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def snippet(language):
    """The first ```language block of the clients guide."""
    found = re.search(rf"^```{language}\n(.*?)^```", CLIENTS_GUIDE.read_text(), re.S | re.M)
    assert found, f"docs/clients.md has no {language} block"
    return found.group(1)


def login(server, username):
    return json.loads(grpcurl("auth.v1.AuthService/Login",
                              {"username": username, "password": PASSWORD}, server.addr))


class Upstream:
    """The service behind the proxy: answers every request with the headers
    it received (every value of each name) as JSON, and counts them."""

    def __init__(self):
        self.requests = 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                upstream.requests += 1
                seen = {name.lower(): self.headers.get_all(name) for name in self.headers.keys()}
                body = json.dumps(seen).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    """nginx running the server block of docs/clients.md, on ports of the
    test's own, with everything it writes in `directory`."""

    def __init__(self, directory, authd_http, upstream_port):
        if not os.path.exists(NGINX):
            reason = os.environ.get("AUTHD_NGINX_SKIP")
            if reason:
                pytest.skip(f"nginx: {reason}")
            pytest.fail("nginx is not installed (tests/blackbox/run installs it)")
        self.port = free_port()
        server = snippet("nginx")
        for documented, actual in [("127.0.0.1:8000", f"127.0.0.1:{self.port}"),
                                   ("127.0.0.1:3000", f"127.0.0.1:{upstream_port}"),
                                   ("127.0.0.1:8080", authd_http)]:
            assert documented in server, documented
            server = server.replace(documented, actual)
        directory.mkdir()
        self.directory = directory
        temp_paths = "\n".join(f"  {kind}_temp_path {directory}/{kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = directory / "nginx.conf"
        conf.write_text(f"""
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp_paths}
{server}
}}
""")
        command = [NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"nginx exited:\n{self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"nginx never listened:\n{self.log()}"
                time.sleep(0.05)

    def log(self):
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    def get(self, path, headers):
        return http_get(f"http://127.0.0.1:{self.port}{path}", headers)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=30)


IDENTITY = ["x-authd-user-id", "x-authd-username", "x-authd-roles",
            "x-authd-session-id", "x-authd-token-id"]
SPOOFED = {"X-Authd-User-Id": "00000000-0000-4000-8000-000000000000",
           "X-Authd-Roles": "admin", "X-Authd-Username": "root",
           "X-Authd-Session-Id": "spoofed", "X-Authd-Token-Id": "spoofed"}


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_nginx_lets_through_only_what_authd_vouches_for(database, tmp_path):
    for name, role in [("alice", "reader"), ("ada", "admin")]:
        added = cli(database, "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD)
        assert added.returncode == 0, added.stderr
    server = Authd(database)
    upstream = Upstream()
    nginx = None
    try:
        nginx = Nginx(tmp_path / "nginx", server.http, upstream.port)
        alice, ada = login(server, "alice"), login(server, "ada")
        checked = json.loads(grpcurl("auth.v1.AuthService/ValidateToken",
                                     {"accessToken": alice["accessToken"]}, server.addr))

        # A valid token: the service sees authd's identity, never the
        # client's, and one value of each.
        status, _, body = nginx.get("/hello", {"Authorization": f"Bearer {alice['accessToken']}", **SPOOFED})
        assert status == 200, nginx.log()
        seen = json.loads(body)
        assert {name: seen.get(name) for name in IDENTITY} == {
            "x-authd-user-id": [alice["userId"]],
            "x-authd-username": ["alice"],
            "x-authd-roles": ["reader"],
            "x-authd-session-id": [alice["sessionId"]],
            "x-authd-token-id": [checked["jti"]],
        }
        assert upstream.requests == 1

        # The admin location asks for the role.
        status, _, _ = nginx.get("/admin/users", {"Authorization": f"Bearer {alice['accessToken']}"})
        assert status == 403
        status, _, body = nginx.get("/admin/users", {"Authorization": f"Bearer {ada['accessToken']}"})
        assert status == 200 and json.loads(body)["x-authd-roles"] == ["admin"]
        assert upstream.requests == 2

        # No token, however convincing the headers: refused before the
        # service hears of it.
        status, headers, _ = nginx.get("/hello", SPOOFED)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"

        # Logged out: refused at once.
        subprocess.run([GRPCURL, "-plaintext", "-H", f"authorization: Bearer {alice['accessToken']}",
                        "-d", "{}", server.addr, "auth.v1.AuthService/Logout"], check=True,
                       capture_output=True, timeout=30)
        status, headers, _ = nginx.get("/hello", {"Authorization": f"Bearer {alice['accessToken']}"})
        assert status == 401 and headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert upstream.requests == 2
    finally:
        if nginx:
            nginx.stop()
        upstream.stop()
        assert server.terminate() == 0
    log = server.output()
    assert alice["accessToken"] not in log and ada["accessToken"] not in log


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_envoy_check_is_found_by_reflection_and_answers_grpcurl(database):
    assert cli(database, "user", "add", "alice", "--role", "reader", "--password-stdin",
               stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        services = subprocess.run([GRPCURL, "-plaintext", server.addr, "list"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
        assert "envoy.service.auth.v3.Authorization" in services, services
        described = subprocess.run(
            [GRPCURL, "-plaintext", server.addr, "describe", "envoy.service.auth.v3.CheckRequest"],
            capture_output=True, text=True, timeout=30)
        assert described.returncode == 0 and "AttributeContext attributes" in described.stdout, described

        alice = login(server, "alice")

        def check(headers, extensions=None):
            attributes = {"request": {"http": {"headers": headers}}}
            if extensions:
                attributes["contextExtensions"] = extensions
            return json.loads(grpcurl("envoy.service.auth.v3.Authorization/Check",
                                      {"attributes": attributes}, server.addr))

        allowed = check({"authorization": f"Bearer {alice['accessToken']}", "x-authd-user-id": "spoofed"})
        assert allowed["status"].get("code", 0) == 0, allowed
        set_headers = {h["header"]["key"]: h["header"]["value"] for h in allowed["okResponse"]["headers"]}
        assert set_headers["x-authd-user-id"] == alice["userId"]
        assert set_headers["x-authd-session-id"] == alice["sessionId"]

        denied = check({})
        assert denied["status"]["code"] == 16, denied
        assert denied["deniedResponse"]["status"]["code"] == "Unauthorized"
        assert json.loads(denied["deniedResponse"]["body"]) == {"error": "missing_token"}

        forbidden = check({"authorization": f"Bearer {alice['accessToken']}"},
                          {"authd_required_role": "admin"})
        assert forbidden["status"]["code"] == 7, forbidden
        assert forbidden["deniedResponse"]["status"]["code"] == "Forbidden"

        health = json.loads(grpcurl("grpc.health.v1.Health/Check",
                                    {"service": "envoy.service.auth.v3.Authorization"}, server.addr))
        assert health["status"] == "SERVING"
    finally:
        assert server.terminate() == 0


def test_the_python_and_node_snippets_of_the_clients_guide_run(pb, database, tmp_path):
    auth_pb2, _ = pb
    assert cli(database, "user", "add", "alice", "--role", "reader", "--password-stdin",
               stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        env = {**os.environ, "AUTHD_ADDR": server.addr, "AUTHD_USERNAME": "alice",
               "AUTHD_PASSWORD": PASSWORD}

        script = tmp_path / "client.py"
        script.write_text(snippet("python"))
        generated = Path(auth_pb2.__file__).parents[2]
        python = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                timeout=60, env={**env, "PYTHONPATH": str(generated)})
        assert python.returncode == 0, python.stderr
        valid, after = python.stdout.splitlines()
        assert re.fullmatch(r"valid \('[0-9a-f-]{36}', \['reader'\]\)", valid), valid
        assert after == "after logout None"

        # In the directory of its node_modules; the proto path is the
        # repository's, as the snippet says.
        script = Path(os.environ["AUTHD_NODE_DIR"]) / "client.mjs"
        script.write_text(snippet("js"))
        node = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60,
                              env=env, cwd=ROOT)
        assert node.returncode == 0, node.stderr
        valid, after = node.stdout.splitlines()
        assert valid.startswith("valid "), valid
        answer = json.loads(valid.removeprefix("valid "))
        assert answer["roles"] == ["reader"] and len(answer["userId"]) == 36
        assert after == "after logout null"
    finally:
        assert server.terminate() == 0
    assert database.rows("revoked_tokens") == 2
