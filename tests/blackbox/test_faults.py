"""Database faults, with a PostgreSQL server each test starts itself in a
temporary directory on a free port, so it can stop it hard, freeze it and
start it again: the built authd binary must answer UNAVAILABLE within the
call's deadline rather than hang, never call a revoked token valid, come
back on its own, and keep every Logout it acknowledged."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

from test_blackbox import PASSWORD, Authd, cli, free_port, grpcurl, pb  # noqa: F401 (pb: a fixture)

# The deadline a client sets on each call here: authd must give its own
# answer well before it (its database operations give up after 3 s).
CALL_DEADLINE_S = 8


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (as the postgres user when
    run as root, which PostgreSQL refuses)."""

    def __init__(self):
        self.bin = Path(os.environ["AUTHD_PG_BIN"])
        self.root = Path(tempfile.mkdtemp(prefix="authd-faults-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_owner = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/authd"
        self.start()

    def run(self, program, *args):
        result = subprocess.run([*self.as_owner, self.bin / program, *map(str, args)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{program}: {result.stderr}"

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w", "-t", "60",
                 "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                       f"-c unix_socket_directories={self.root}", "start")

    def stop_immediately(self):
        """As after a crash: no checkpoint; what was committed is in the WAL."""
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def processes(self):
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)],
                                  capture_output=True, text=True).stdout.split()
        return [postmaster, *map(int, children)]

    def freeze(self):
        """SIGSTOP every process of the server: connections stay open and
        silent, like a host that stopped answering."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self):
        for pid in self.processes():
            os.kill(pid, signal.SIGCONT)

    def destroy(self):
        try:
            self.thaw()
        except (OSError, ValueError):
            pass
        subprocess.run([*self.as_owner, self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class OwnDatabase:
    """What the black-box helpers need of a database: its environment and
    a working directory."""

    def __init__(self, postgres, workdir):
        self.postgres = postgres
        self.workdir = workdir
        workdir.mkdir()

    def env(self):
        return {**os.environ, "DATABASE_URL": self.postgres.url, "AUTHD_DATA_DIR": str(self.workdir)}


@pytest.fixture
def database(tmp_path):
    postgres = OwnPostgres()
    try:
        yield OwnDatabase(postgres, tmp_path / "work")
    finally:
        postgres.destroy()


def health(server):
    return json.loads(grpcurl("grpc.health.v1.Health/Check", {}, server.addr)).get("status")


def wait_until(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


def code_of(call):
    """The status code of `call()`, OK included."""
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


def assert_fails_closed(stub, auth_pb2, revoked, live):
    """While the database is out of reach: the revoked token is never
    valid, and the live one is answered from memory only until the state is
    too old to trust (3 s), then with UNAVAILABLE."""
    def validate(token):
        try:
            return stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token),
                                      timeout=CALL_DEADLINE_S)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            return None

    def live_refused():
        answer = validate(revoked)
        assert answer is None or answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED, answer
        answer = validate(live)
        assert answer is None or answer.valid, answer
        return answer is None
    wait_until(live_refused, 10, "ValidateToken still vouches for tokens without its database")


def metric(server, name):
    """The value of the unlabelled metric `name` in a scrape of /metrics."""
    status, _, body = server.get("/metrics")
    assert status == 200, body
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert found, f"/metrics has no {name}"
    return float(found.group(1))


def outage(pb, database, cut, restore, reconnects=False):
    """Cuts the database off with `cut`, checks how authd answers, restores
    it with `restore`, and checks that authd comes back by itself (and,
    where `reconnects`, that its notification listener was counted as
    connected again)."""
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = lambda: stub.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD),  # noqa: E731
                                       timeout=CALL_DEADLINE_S)
            live, revoked = login().access_token, login().access_token
            stub.Logout(auth_pb2.LogoutRequest(access_token=revoked))

            cut()
            # Within the call's deadline, and as UNAVAILABLE: never a hang
            # into DEADLINE_EXCEEDED.
            assert code_of(login) == grpc.StatusCode.UNAVAILABLE
            assert code_of(lambda: stub.Logout(auth_pb2.LogoutRequest(access_token=live),
                                               timeout=CALL_DEADLINE_S)) == grpc.StatusCode.UNAVAILABLE
            assert_fails_closed(stub, auth_pb2, revoked, live)
            # The number to alert on: past the 3 s bound, and growing.
            age = metric(server, "authd_revocation_state_age_seconds")
            assert age > 3, age
            wait_until(lambda: metric(server, "authd_revocation_state_age_seconds") > age + 0.2, 5,
                       "the revocation state's age stopped growing")
            wait_until(lambda: health(server) == "NOT_SERVING", 15, "health never said NOT_SERVING")
            wait_until(lambda: server.get("/readyz")[0] == 503, 5, "/readyz never said 503")
            assert server.get("/healthz")[0] == 200

            restore()

            # Back within 5 s, without a restart: Login, ValidateToken (its
            # revocation state caught up) and health.
            def recovered():
                try:
                    login()
                    live_answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=live))
                    revoked_answer = stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=revoked))
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                    return False
                assert revoked_answer.reason == auth_pb2.TOKEN_INVALID_REASON_REVOKED, revoked_answer
                return (live_answer.valid and health(server) == "SERVING"
                        and server.get("/readyz")[0] == 200)
            wait_until(recovered, 5, "authd after the database came back")
            assert metric(server, "authd_revocation_state_age_seconds") < 3
            if reconnects:
                wait_until(lambda: metric(server, "authd_revocation_listener_reconnects_total") >= 1, 10,
                           "the listener's reconnect was never counted")
    finally:
        assert server.terminate() == 0, server.output()


def test_postgres_stopped_then_started_again(pb, database):
    outage(pb, database, database.postgres.stop_immediately, database.postgres.start, reconnects=True)


def test_postgres_frozen_with_sigstop_then_resumed(pb, database):
    outage(pb, database, database.postgres.freeze, database.postgres.thaw)


def test_acknowledged_logouts_survive_kill9_and_an_immediate_postgres_stop(pb, database):
    """Logouts from several clients at once; the moment the hundredth has
    returned OK, authd gets SIGKILL and PostgreSQL an immediate stop. After
    both restart, every Logout that returned OK holds."""
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database)
    with grpc.insecure_channel(server.addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        tokens = [stub.Login(auth_pb2.LoginRequest(username="alice", password=PASSWORD)).access_token
                  for _ in range(160)]

    acknowledged, lock, hundred = [], threading.Lock(), threading.Event()

    def log_out(share):
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            for token in share:
                try:
                    stub.Logout(auth_pb2.LogoutRequest(access_token=token), timeout=CALL_DEADLINE_S)
                except grpc.RpcError:
                    return
                with lock:
                    acknowledged.append(token)
                    if len(acknowledged) == 100:
                        hundred.set()

    threads = [threading.Thread(target=log_out, args=(tokens[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    assert hundred.wait(timeout=60), f"only {len(acknowledged)} Logouts returned OK"
    server.proc.kill()
    database.postgres.stop_immediately()
    for t in threads:
        t.join(timeout=60)
    server.proc.wait(timeout=30)
    assert len(acknowledged) >= 100

    database.postgres.start()
    server = Authd(database)
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            lost = [t for t in acknowledged
                    if stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=t)).reason
                    != auth_pb2.TOKEN_INVALID_REASON_REVOKED]
        assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged Logouts lost"
        print(f"{len(acknowledged)} of {len(acknowledged)} acknowledged Logouts held after kill -9 "
              f"of authd and an immediate stop of PostgreSQL; {len(tokens) - len(acknowledged)} were cut off")
    finally:
        assert server.terminate() == 0
