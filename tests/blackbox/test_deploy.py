"""The deployment files in deploy/: the systemd unit passes systemd's own
check, and the Kubernetes manifest gives a stopping pod the time the
shutdown needs and probes what authd serves."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AUTHD = os.environ.get("AUTHD_BIN", str(ROOT / "target" / "debug" / "authd"))


def seconds(text):
    assert text.endswith("s") and text[:-1].isdigit(), text
    return int(text[:-1])


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (ROOT / "deploy" / "authd.service").read_text()
    assert "ExecStart=/usr/local/bin/authd serve" in unit
    # The check wants the binary it names to exist: the one just built.
    copy = tmp_path / "authd.service"
    copy.write_text(unit.replace("/usr/local/bin/authd", AUTHD))
    checked = subprocess.run([analyze, "verify", "--man=no", str(copy)],
                             capture_output=True, text=True, timeout=60)
    # It warns of what it ignores on stderr, and still exits 0.
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("StateDirectory", "authd"), ("ExecReload", "/bin/kill -HUP $MAINPID")]:
        assert settings.get(key) == value, key
    assert seconds(settings["TimeoutStopSec"]) > 5 + 10


def test_the_kubernetes_manifest_outlasts_the_shutdown_and_probes_authd():
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in documents}
    assert set(kinds) == {"Deployment", "Service"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container, = pod["containers"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    delay = seconds(env["AUTHD_SHUTDOWN_DELAY"])
    grace = seconds(env["AUTHD_SHUTDOWN_GRACE_PERIOD"])
    assert pod["terminationGracePeriodSeconds"] > delay + grace
    grpc_port = int(env["AUTHD_LISTEN"].rsplit(":", 1)[1])
    http_port = int(env["AUTHD_HTTP_LISTEN"].rsplit(":", 1)[1])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": grpc_port, "http": http_port}
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port
    # Readiness is probed often enough to be seen within the delay.
    assert container["readinessProbe"]["periodSeconds"] < delay
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The key-encryption key comes from a Secret, mounted where the flag
    # says, and not readable by others (authd refuses it then).
    kek = Path(env["AUTHD_KEY_ENCRYPTION_KEY_FILE"])
    mount, = [m for m in container["volumeMounts"] if kek.parent == Path(m["mountPath"])]
    volume, = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["items"] == [{"key": kek.name, "path": kek.name}]
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    database = [var for var in container["env"] if var["name"] == "DATABASE_URL"][0]
    assert "secretKeyRef" in database["valueFrom"]
    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert {port["targetPort"] for port in service["ports"]} == {"grpc", "http"}
