"""Deployment files, checked without a Docker engine or a cluster: schemas and the invariants that matter."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
KUBERNETES_VERSION = "1.30.0"


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!reset` (drop a value from the file it overrides) keeps its node's value."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", _reset)


def compose(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


@pytest.mark.skipif(
    not COMPOSE_SCHEMA.is_file(), reason="no ../shared/schemas/compose-spec.json beside this clone"
)
@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text())).validate(compose(name))


def test_compose_runs_a_gpu_encoder_tier_behind_a_healthy_search_service() -> None:
    services = compose("docker-compose.yml")["services"]
    encoder, search = services["encoder"], services["search"]
    [device] = encoder["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "ports" not in encoder, "a published encoder port would stop --scale encoder=N"
    assert search["environment"]["SEARCH_ENCODER"] == "dns:///encoder:50051"
    assert search["depends_on"] == {
        "milvus": {"condition": "service_healthy"},
        "encoder": {"condition": "service_healthy"},
    }
    assert all("healthcheck" in service for service in services.values())
    assert [name for name, service in services.items() if "ports" in service] == ["search", "web"]
    cpu = compose("docker-compose.cpu.yml")["services"]["encoder"]
    assert cpu["environment"]["ENCODER_DEVICE"] == "cpu" and cpu["deploy"] == {}


def test_env_example_names_every_setting_of_the_compose_file() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    defined = {
        line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    }
    assert used <= defined, sorted(used - defined)


def install_set(extra: str) -> set[str]:
    """The distributions `pip install '.[extra]'` would install."""
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            "-",
            f".[{extra}]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {item["metadata"]["name"].lower() for item in json.loads(report.stdout)["install"]}


HEAVY = {"torch", "torchvision", "openai-clip"}


def test_the_search_image_installs_neither_torch_nor_cuda() -> None:
    dockerfile = (ROOT / "docker" / "search.Dockerfile").read_text()
    assert "pip install '.[search]'" in dockerfile and "encoder" not in dockerfile.lower()
    names = install_set("search")
    assert {"pymilvus", "milvus-lite", "grpcio"} <= names
    assert sorted(name for name in names if name in HEAVY or name.startswith("nvidia")) == []


def test_the_web_image_installs_neither_torch_nor_milvus() -> None:
    dockerfile = (ROOT / "docker" / "web.Dockerfile").read_text()
    assert "pip install '.[web]'" in dockerfile and "encoder" not in dockerfile.lower()
    names = install_set("web")
    assert {"starlette", "uvicorn", "grpcio"} <= names
    heavy = HEAVY | {"pymilvus", "milvus-lite"}
    assert sorted(name for name in names if name in heavy or name.startswith("nvidia")) == []


def test_the_web_tier_reaches_search_and_search_shares_its_thumbnails() -> None:
    services = compose("docker-compose.yml")["services"]
    web, search = services["web"], services["search"]
    assert web["environment"]["WEB_SEARCH"] == "search:50052"
    assert web["depends_on"] == {"search": {"condition": "service_healthy"}}
    assert web["ports"] == ["${WEB_PORT:-8080}:8080"]
    assert "/healthz" in web["healthcheck"]["test"][-1]
    assert search["environment"]["SEARCH_THUMBNAIL_DIR"] == "/data/thumbnails"
    assert "thumbnails:/data/thumbnails" in search["volumes"]
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests()}
    [container] = by_kind[("Deployment", "web")]["spec"]["template"]["spec"]["containers"]
    assert {"name": "WEB_SEARCH", "value": "search.default.svc.cluster.local:50052"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert by_kind[("Service", "web")]["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind[("PersistentVolumeClaim", "thumbnails")]["spec"]["accessModes"] == ["ReadWriteMany"]
    search_pod = by_kind[("Deployment", "search")]["spec"]["template"]["spec"]
    assert search_pod["volumes"] == [
        {"name": "thumbnails", "persistentVolumeClaim": {"claimName": "thumbnails"}}
    ]
    # The service must write there, as its user: the volume is given to its group.
    assert search_pod["securityContext"]["fsGroup"] == search_pod["securityContext"]["runAsUser"]
    resources = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert resources == ["encoder.yaml", "search.yaml", "web.yaml"]


def manifests() -> list[dict]:
    """The Kubernetes objects of deploy/k8s (the Helm values and the kustomization are not objects)."""
    paths = [ROOT / "deploy" / "k8s" / name for name in ("encoder.yaml", "search.yaml", "web.yaml")]
    return [document for path in paths for document in yaml.safe_load_all(path.read_text())]


def test_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    for manifest in manifests():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_kubernetes_encoder_tier_has_gpus_probes_a_headless_service_and_an_autoscaler() -> None:
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests()}
    [container] = by_kind[("Deployment", "encoder")]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["grpc"] and container["livenessProbe"]["grpc"]
    assert by_kind[("Service", "encoder")]["spec"]["clusterIP"] == "None"
    assert by_kind[("HorizontalPodAutoscaler", "encoder")]["spec"]["scaleTargetRef"]["name"] == "encoder"
    [search] = by_kind[("Deployment", "search")]["spec"]["template"]["spec"]["containers"]
    assert {"name": "SEARCH_ENCODER", "value": "dns:///encoder.default.svc.cluster.local:50051"} in search[
        "env"
    ]


def test_every_probe_asks_the_plaintext_health_port_so_that_tls_cannot_break_it() -> None:
    """Docker's HEALTHCHECK and Kubernetes' gRPC probes cannot speak TLS: they must ask --health-port."""
    for service, prefix in (("encoder", "ENCODER"), ("search", "SEARCH")):
        dockerfile = (ROOT / "docker" / f"{service}.Dockerfile").read_text()
        health_port = re.search(rf"{prefix}_HEALTH_PORT=(\d+)", dockerfile).group(1)
        assert f'"imagesearch.healthcheck", "127.0.0.1:{health_port}"' in dockerfile
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]
        assert compose["environment"][f"{prefix}_HEALTH_PORT"] == health_port
        assert compose["healthcheck"]["test"][-1] == f"127.0.0.1:{health_port}"
        [container] = next(
            m for m in manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == service
        )["spec"]["template"]["spec"]["containers"]
        assert {"name": f"{prefix}_HEALTH_PORT", "value": health_port} in container["env"]
        probes = [container[key] for key in container if key.endswith("Probe")]
        assert probes and all(probe["grpc"]["port"] == int(health_port) for probe in probes)
