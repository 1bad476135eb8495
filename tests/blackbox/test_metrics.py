"""The metrics from the outside: what /metrics serves passes Prometheus's
own checker and parses with the Prometheus Python client; a real
Prometheus server, set up with the scrape configuration of
docs/operations.md, scrapes authd and answers queries about its calls; and
the documented alert rules pass `promtool check rules`."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_blackbox import (  # noqa: F401 (database, pb: fixtures)
    PASSWORD, ROOT, Authd, cli, database, free_port, http_get, pb)

OPERATIONS = ROOT / "docs" / "operations.md"


def prometheus_binary(name):
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if found:
        return found
    reason = os.environ.get("AUTHD_PROMETHEUS_SKIP")
    if reason:
        pytest.skip(f"{name}: {reason}")
    pytest.fail(f"{name} is not installed (tests/blackbox/run installs Debian's prometheus)")


def documented(marker):
    """The ```yaml block of the operations guide that holds `marker`."""
    for block in re.findall(r"^```yaml\n(.*?)^```", OPERATIONS.read_text(), re.S | re.M):
        if marker in block:
            return block
    raise AssertionError(f"docs/operations.md has no yaml block with {marker}")


def scrape(server):
    status, headers, body = server.get("/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def handled(found, method, code):
    return found[("grpc_server_handled_total", frozenset({
        "grpc_type": "unary", "grpc_service": "auth.v1.AuthService",
        "grpc_method": method, "grpc_code": code}.items()))]


def test_metrics_pass_promtool_and_count_the_calls(pb, database):
    promtool = prometheus_binary("promtool")
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "mia", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database)
    try:
        before = samples(scrape(server))
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            login = stub.Login(auth_pb2.LoginRequest(username="mia", password=PASSWORD))
            with pytest.raises(grpc.RpcError) as refused:
                stub.Login(auth_pb2.LoginRequest(username="mia", password="not-mias-password-7Qx"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            for _ in range(4):
                assert stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=login.access_token)).valid
        text = scrape(server)
    finally:
        assert server.terminate() == 0, server.output()

    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), \
        checked.stdout + checked.stderr

    for secret in (PASSWORD, "not-mias-password-7Qx", login.access_token, login.refresh_token,
                   login.access_token.split(".")[2]):
        assert secret not in text
    after = samples(text)
    assert handled(after, "ValidateToken", "OK") - handled(before, "ValidateToken", "OK") == 4
    assert handled(after, "Login", "OK") - handled(before, "Login", "OK") == 1
    assert handled(after, "Login", "Unauthenticated") - handled(before, "Login", "Unauthenticated") == 1
    logins = lambda found, result: found[("authd_logins_total", frozenset({"result": result}.items()))]  # noqa: E731
    assert logins(after, "ok") == 1 and logins(after, "unauthenticated") == 1
    assert after[("authd_token_validations_total",
                  frozenset({"result": "valid", "reason": "none"}.items()))] == 4
    assert after[("process_resident_memory_bytes", frozenset())] > 0
    # Each of authd's own metrics says what it is.
    helped = set(re.findall(r"^# HELP (authd_\w+) \S", text, re.M))
    written = {name for name, _ in after if name.startswith("authd_")}
    for name in written:
        assert re.sub(r"_(bucket|sum|count)$", "", name) in helped, name
    assert {"authd_revocation_state_age_seconds", "authd_password_hash_queue", "authd_revocations",
            "authd_signing_keys", "authd_build_info", "authd_purge_rows_total",
            "authd_refreshes_total", "authd_refresh_reuse_detected_total",
            "authd_revocation_listener_reconnects_total", "authd_password_hash_seconds"} <= helped


class Prometheus:
    """A Prometheus server of the test's own, scraping `target` every second
    with the documented scrape configuration."""

    def __init__(self, directory, target):
        binary = prometheus_binary("prometheus")
        self.port = free_port()
        config = documented("job_name: authd")
        for written, actual in [("scrape_interval: 15s", "scrape_interval: 1s"),
                                ("127.0.0.1:8080", target)]:
            assert written in config, written
            config = config.replace(written, actual)
        directory.mkdir()
        (directory / "prometheus.yml").write_text(config)
        self.log = open(directory / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_until(lambda: self.get("/-/ready")[0] == 200, 30, "Prometheus never became ready")

    def get(self, path):
        try:
            return http_get(f"http://127.0.0.1:{self.port}{path}")
        except OSError:
            return None, None, b""

    def query(self, expression):
        status, _, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expression}))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def wait_until(self, condition, seconds, what):
        deadline = time.monotonic() + seconds
        while not condition():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, f"{what}: not within {seconds} s\n{self.output()}"
            time.sleep(0.1)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_a_real_prometheus_scrapes_authd_and_answers_for_validate_token(pb, database, tmp_path):
    auth_pb2, auth_pb2_grpc = pb
    assert cli(database, "user", "add", "noa", "--password-stdin", stdin=PASSWORD).returncode == 0
    server = Authd(database)
    prometheus = None
    try:
        prometheus = Prometheus(tmp_path / "prometheus", server.http)
        calls = 7
        with grpc.insecure_channel(server.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            token = stub.Login(auth_pb2.LoginRequest(username="noa", password=PASSWORD)).access_token
            for _ in range(calls):
                assert stub.ValidateToken(auth_pb2.ValidateTokenRequest(access_token=token)).valid
        expression = ('grpc_server_handled_total{job="authd",grpc_service="auth.v1.AuthService",'
                      'grpc_method="ValidateToken",grpc_code="OK"}')

        def scraped_every_call():
            result = prometheus.query(expression)
            return len(result) == 1 and result[0][1] == calls
        prometheus.wait_until(scraped_every_call, 30, f"Prometheus never saw {calls} ValidateToken calls")
        (labels, _), = prometheus.query(expression)
        assert labels["grpc_type"] == "unary" and labels["instance"] == server.http
        assert prometheus.query('up{job="authd"}')[0][1] == 1
        # The latency histogram answers a quantile query.
        quantile = prometheus.query(
            'histogram_quantile(0.99, sum by (le) (grpc_server_handling_seconds_bucket'
            '{grpc_method="ValidateToken"}))')
        assert quantile and 0 < quantile[0][1] <= 10, quantile
    finally:
        if prometheus:
            prometheus.stop()
        assert server.terminate() == 0, server.output()


def test_the_documented_alert_rules_pass_promtool(tmp_path):
    promtool = prometheus_binary("promtool")
    rules = tmp_path / "authd-rules.yml"
    rules.write_text(documented("alert: AuthdRevocationStateStale"))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_metrics_off_serves_no_metrics(database):
    server = Authd(database, "--metrics", "off")
    try:
        assert server.get("/metrics")[0] == 404
        assert server.get("/healthz")[0] == 200
    finally:
        assert server.terminate() == 0, server.output()
