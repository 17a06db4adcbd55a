"""deploy/: the Kubernetes manifests validate offline against Kubernetes' own schemas
(kubernetes-validate), nginx accepts the configuration that chaos and the e2e tests run, and the
pieces refer to each other correctly (ports, the Redis URL, the files they mount or copy)."""
import copy
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from support import missing, needs_program

from streamrnn.tools.cluster_process import nginx_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30"


def manifests() -> list[dict]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def by_kind(kind: str, name: str) -> dict:
    [found] = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def validate():
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install -e '.[test]')")
    return lambda manifest: kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_manifests_validate_against_the_kubernetes_schemas(validate):
    kinds = set()
    for manifest in manifests():
        validate(manifest)
        kinds.add(manifest["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


def test_the_validator_rejects_a_broken_manifest(validate):
    """The check above can fail: a wrong type and an unknown field are caught."""
    from kubernetes_validate.utils import ValidationError
    deployment = copy.deepcopy(by_kind("Deployment", "streamrnn"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(ValidationError):
        validate(deployment)
    deployment = copy.deepcopy(by_kind("Deployment", "streamrnn"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValidationError):
        validate(deployment)


def test_the_deployment_probes_drains_and_finds_redis():
    pod = by_kind("Deployment", "streamrnn")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > 5 + 10  # preStop + the daemon's default drain
    redis_url = container["args"][container["args"].index("--redis-url") + 1]
    redis_service = by_kind("Service", "streamrnn-redis")
    assert redis_url == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "grpc": 50051}
    service_ports = {p["targetPort"] for p in by_kind("Service", "streamrnn")["spec"]["ports"]}
    assert service_ports == set(ports)
    target = by_kind("HorizontalPodAutoscaler", "streamrnn")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "streamrnn")
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilization needs a request


def test_deploy_nginx_conf_is_the_one_chaos_runs():
    expected = nginx_config(["streamrnn:8080"], ["streamrnn:50051"], "8080", "50051", workers="auto")
    assert (DEPLOY / "nginx.conf").read_text() == expected


def test_nginx_accepts_deploy_nginx_conf(tmp_path):
    """Debian's nginx checks the file (with the compose service's name resolved on loopback)."""
    nginx = needs_program("nginx")
    config = tmp_path / "nginx.conf"
    text = (DEPLOY / "nginx.conf").read_text().replace("server streamrnn:", "server 127.0.0.1:")
    own_files = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                                   "uwsgi", "scgi"))
    config.write_text(text.replace("\nhttp {\n", "\nhttp {\n" + own_files + f"    access_log {tmp_path}/access.log;\n"))
    paths = f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;"
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(config), "-g", paths], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_compose_wires_replicas_redis_and_nginx():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert set(compose) == {"redis", "streamrnn", "nginx"}
    command = compose["streamrnn"]["command"]
    assert command[command.index("--redis-url") + 1] == "redis://redis:6379/0"
    assert compose["streamrnn"]["deploy"]["replicas"] >= 2
    assert (DEPLOY.parent / compose["streamrnn"]["build"]["dockerfile"]).is_file()
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in compose["nginx"]["volumes"]
    upstreams = re.findall(r"server (\w+):(\d+)", (DEPLOY / "nginx.conf").read_text())
    assert upstreams == [("streamrnn", "8080"), ("streamrnn", "50051")]


def test_the_dockerfile_copies_what_exists_and_serves_on_all_interfaces():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (DEPLOY.parent / source).exists(), source
    [entrypoint] = [line for line in lines if line.startswith("ENTRYPOINT")]
    assert '"serve", "--host", "0.0.0.0"' in entrypoint
