"""Deployment files, checked without a Docker engine or a cluster: schemas and the invariants that matter."""

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from encoder_service.config import EncoderConfig
from imagesearch.defaults import ENCODER_METRICS_PORT, MAX_IMAGE_PIXELS, SEARCH_METRICS_PORT
from search_service.config import SearchConfig
from web.config import WebConfig
from web.hosts import UNCHECKED_PATHS

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
    assert web["ports"] == ["${WEB_PUBLISH_ADDRESS:-127.0.0.1}:${WEB_PORT:-8080}:8080"]
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


def test_the_search_pods_memory_limit_covers_what_its_settings_let_ingests_hold() -> None:
    """The limit was 2 GiB while the defaults let 16 streams hold 256 MiB each (about 2.5 times that in
    memory, README "Limits"): three fast ingests at once could have the pod killed for memory."""
    search = next(m for m in manifests() if (m["kind"], m["metadata"]["name"]) == ("Deployment", "search"))
    container = search["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    defaults = SearchConfig(milvus_uri="http://milvus:19530")
    streams = int(env.get("SEARCH_MAX_CONCURRENT_INGESTS", defaults.max_concurrent_ingests))
    buffer = int(env.get("SEARCH_INGEST_BUFFER_BYTES", defaults.ingest_buffer_bytes))
    workers = int(env["SEARCH_THUMBNAIL_WORKERS"])  # else the node's cores decide, up to 16
    decoding = 4 * MAX_IMAGE_PIXELS  # a thumbnail process decoding the largest picture, as RGBA
    held = 2.5 * streams * buffer + workers * decoding + (512 << 20)  # 512 MiB: the service itself
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and held <= int(limit[:-2]) << 30


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


def test_every_tier_leaves_its_callers_endpoint_lists_before_it_stops_and_then_drains_in_its_grace() -> None:
    drain_s = {  # the web tier's uvicorn waits for its requests, whose calls end within --timeout-s
        "encoder": EncoderConfig().shutdown_grace_s,
        "search": SearchConfig().shutdown_grace_s,
        "web": WebConfig().timeout_s,
    }
    deployments = {m["metadata"]["name"]: m for m in manifests() if m["kind"] == "Deployment"}
    assert set(deployments) == set(drain_s)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and int(command[1]) >= 5, name
        assert pod["terminationGracePeriodSeconds"] > int(command[1]) + drain_s[name], name


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
        probes = [container[key] for key in container if key.endswith("Probe") and "grpc" in container[key]]
        assert probes and all(probe["grpc"]["port"] == int(health_port) for probe in probes)


# Each service's settings, and the prefix of their environment twins.
SETTINGS = {
    "encoder": (EncoderConfig, "ENCODER_"),
    "search": (SearchConfig, "SEARCH_"),
    "web": (WebConfig, "WEB_"),
}


def setting_variables(service: str, names: str = "") -> set[str]:
    """The environment variables `service` reads as settings (those whose field name holds one of `names`)."""
    config, prefix = SETTINGS[service]
    return {
        prefix + field.name.upper()
        for field in dataclasses.fields(config)
        if not names or any(part in field.name for part in names.split())
    }


def pod_templates() -> dict[str, dict]:
    return {m["metadata"]["name"]: m["spec"]["template"] for m in manifests() if m["kind"] == "Deployment"}


def kubernetes_container(service: str) -> dict:
    [container] = pod_templates()[service]["spec"]["containers"]
    return container


def service_link_variables(service: dict) -> set[str]:
    """What the kubelet sets in every pod of the namespace for a Service with a cluster IP, unless the pod
    says enableServiceLinks: false: SEARCH_SERVICE_HOST, SEARCH_PORT=tcp://10.96.0.12:50052 and their kin."""
    name = service["metadata"]["name"].upper().replace("-", "_")
    names = {f"{name}_SERVICE_HOST", f"{name}_SERVICE_PORT", f"{name}_PORT"}
    for port in service["spec"]["ports"]:
        if "name" in port:
            names.add(f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        link = f"{name}_PORT_{port['port']}_{port.get('protocol', 'TCP')}"
        names |= {link, f"{link}_PROTO", f"{link}_PORT", f"{link}_ADDR"}
    return names


def test_no_variable_the_kubelet_sets_for_a_service_reaches_a_setting() -> None:
    services = [m for m in manifests() if m["kind"] == "Service" and m["spec"].get("clusterIP") != "None"]
    linked = set().union(*map(service_link_variables, services))
    # Why it matters: the search pods exited at start on --port 'tcp://10.96.0.12:50052'.
    assert {"SEARCH_PORT", "WEB_PORT"} <= linked & set().union(*map(setting_variables, SETTINGS))
    # Every pod, not only those that read a name linked today: a Service added later would start it again.
    assert {name: pod["spec"].get("enableServiceLinks") for name, pod in pod_templates().items()} == {
        name: False for name in SETTINGS
    }


def test_only_readiness_asks_a_health_that_depends_on_milvus_and_the_encoder() -> None:
    """The search service's health is SERVING only while Milvus and an encoder answer: a liveness probe on it
    restarted every search pod whenever either was away, which a restart never mends."""
    search = kubernetes_container("search")
    assert search["readinessProbe"]["grpc"]["port"] == 50062
    assert search["livenessProbe"]["tcpSocket"] == {"port": "grpc"} and "grpc" not in search["livenessProbe"]
    assert {"name": "grpc", "containerPort": 50052} in search["ports"]


def test_the_page_hears_of_the_names_it_is_reached_by_and_answers_its_probes_by_address() -> None:
    """The page refuses a Host header it was not told of (DNS rebinding): compose passes the setting on from
    .env, the manifest sets it, and the probes ask a path that answers any Host (the kubelet's: a pod IP)."""
    assert compose("docker-compose.yml")["services"]["web"]["environment"]["WEB_ALLOWED_HOSTS"] == (
        "${WEB_ALLOWED_HOSTS:-}"
    )
    web = kubernetes_container("web")
    assert "WEB_ALLOWED_HOSTS" in {variable["name"] for variable in web["env"]}
    probes = [web[key] for key in web if key.endswith("Probe")]
    assert probes and {probe["httpGet"]["path"] for probe in probes} <= UNCHECKED_PATHS


@pytest.mark.parametrize(
    ("service", "port"), [("encoder", ENCODER_METRICS_PORT), ("search", SEARCH_METRICS_PORT)]
)
def test_the_metrics_ports_are_declared_where_scrapers_look(service: str, port: int) -> None:
    expose = re.search(r"^EXPOSE (.+)$", (ROOT / "docker" / f"{service}.Dockerfile").read_text(), re.M)
    assert str(port) in expose.group(1).split()
    assert str(port) in compose("docker-compose.yml")["services"][service]["expose"]
    assert {"name": "metrics", "containerPort": port} in kubernetes_container(service)["ports"]
    annotations = pod_templates()[service]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def dockerfile_variables(service: str) -> set[str]:
    text = (ROOT / "docker" / f"{service}.Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.split()[1:] for line in text.splitlines() if line.startswith("ENV ")]
    return {word.split("=", 1)[0] for words in lines for word in words}


def test_every_variable_the_deployment_files_give_a_service_is_one_of_its_settings() -> None:
    # MILVUS_URI was one, until it turned out that pymilvus reads it too (and refuses a Milvus Lite file).
    services = compose("docker-compose.yml")["services"]
    for service in SETTINGS:
        given = {
            "compose": set(services[service]["environment"]),
            "kubernetes": {variable["name"] for variable in kubernetes_container(service)["env"]},
            "image": {
                name for name in dockerfile_variables(service) if not name.startswith(("PYTHON", "PIP_"))
            },
        }
        assert {where: names - setting_variables(service) for where, names in given.items()} == {
            where: set() for where in given
        }, service


def interpolated(value: str, env: dict[str, str]) -> str:
    """`value` as Compose reads it with `env` as .env: ${NAME:-default} is NAME's value, or the default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda match: env.get(match[1]) or match[2], value)


def test_tokens_and_tls_files_in_env_reach_their_services() -> None:
    services = compose("docker-compose.yml")["services"]
    for service in SETTINGS:
        secured = setting_variables(service, "token tls")
        environment = services[service]["environment"]
        # Empty unless .env names them: empty is off for every one of these settings.
        assert {name: environment.get(name) for name in secured} == {
            name: f"${{{name}:-}}" for name in secured
        }
        assert "${TLS_DIR:-tls}:/tls:ro" in services[service]["volumes"]
    assert {"SEARCH_AUTH_TOKENS", "ENCODER_AUTH_TOKENS", "SEARCH_ENCODER_TOKEN", "WEB_SEARCH_TOKEN"} <= {
        name for service in SETTINGS for name in setting_variables(service, "token tls")
    }


def test_kubernetes_callers_send_the_token_their_service_demands_once_its_secret_exists() -> None:
    def secret(service: str, variable: str) -> dict:
        [given] = [v for v in kubernetes_container(service)["env"] if v["name"] == variable]
        return given["valueFrom"]["secretKeyRef"]

    pairs = [
        (("encoder", "ENCODER_AUTH_TOKENS"), ("search", "SEARCH_ENCODER_TOKEN")),
        (("search", "SEARCH_AUTH_TOKENS"), ("web", "WEB_SEARCH_TOKEN")),
    ]
    for demanded, sent in pairs:
        assert secret(*demanded) == secret(*sent), (demanded, sent)
        assert secret(*demanded)["optional"] is True  # no Secret: no authentication, and the pods still start


def test_published_ports_are_on_this_machine_unless_env_says_otherwise() -> None:
    """The search port served every interface with authentication off; the page searches with its token."""
    published = {
        name: service["ports"]
        for name, service in compose("docker-compose.yml")["services"].items()
        if "ports" in service
    }
    assert {name: [interpolated(port, {}) for port in ports] for name, ports in published.items()} == {
        "search": ["127.0.0.1:50052:50052"],
        "web": ["127.0.0.1:8080:8080"],
    }
    anywhere = {"SEARCH_PUBLISH_ADDRESS": "0.0.0.0", "WEB_PUBLISH_ADDRESS": "0.0.0.0", "WEB_PORT": "80"}
    assert [interpolated(port, anywhere) for ports in published.values() for port in ports] == [
        "0.0.0.0:50052:50052",
        "0.0.0.0:80:8080",
    ]


def test_every_image_of_the_manifests_comes_from_a_registry_the_kustomization_names() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text())
    entries = {entry["name"]: entry for entry in kustomization["images"]}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {kubernetes_container(service)["image"].rsplit(":", 1)[0] for service in SETTINGS}
    assert images == entries.keys()
    for name in images:
        registry, _, repository = entries[name]["newName"].rpartition("/")
        assert registry and repository == name and entries[name]["newTag"] == version


def ignored(name: str) -> set[str]:
    return {line for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")}


def test_secrets_and_gpu_wheels_stay_out_of_git_and_the_images() -> None:
    assert {".env", ".whl"} <= ignored(".dockerignore")
    assert ".env" in ignored(".gitignore")


def test_the_encoder_starts_without_internet_on_a_checkpoint_in_its_image_or_a_host_folder() -> None:
    dockerfile = (ROOT / "docker" / "encoder.Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY demo/small-clip-synthetic.pt ./checkpoints/" in dockerfile
    assert (ROOT / "demo" / "small-clip-synthetic.pt").is_file() and "demo" not in ignored(".dockerignore")
    encoder = compose("docker-compose.yml")["services"]["encoder"]
    assert "${MODELS_DIR:-models}:/models" in encoder["volumes"]
    assert interpolated("${MODELS_DIR:-models}", {"MODELS_DIR": "/srv/models"}) == "/srv/models"


def test_imgsearch_works_in_the_web_image_which_has_no_demo() -> None:
    """The package's metadata adds `imgsearch demo` from demo/, which the web image leaves out."""
    assert "demo" not in (ROOT / "docker" / "web.Dockerfile").read_text()
    probe = (
        "import sys; sys.modules['demo'] = None; "
        "from client.cli import main; sys.argv[1:] = ['--help']; main()"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "{up,ingest,search,stats,get,delete,encode}" in done.stdout, done.stderr


def test_the_readme_names_every_address_that_ties_the_manifests_to_the_default_namespace() -> None:
    tied = {
        variable["name"]
        for manifest in manifests()
        if manifest["kind"] == "Deployment"
        for container in manifest["spec"]["template"]["spec"]["containers"]
        for variable in container.get("env", [])
        if ".default." in variable.get("value", "")
    }
    assert tied == {"SEARCH_ENCODER", "SEARCH_MILVUS_URI", "WEB_SEARCH"}
    readme = " ".join((ROOT / "README.md").read_text().split())
    said = readme[readme.index("The manifests reach each other in the namespace `default`") :][:300]
    assert all(f"`{name}`" in said for name in tied)
