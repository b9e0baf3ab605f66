"""deploy/k8s, checked offline.

The kustomization is built here as kustomize builds it, for the fields it uses (anything else
is an error, not ignored): the base, and the base with `components/tls`. Every document is
validated against the Kubernetes schemas (kubernetes-validate, strict: no unknown field), every
variable a manifest sets must be one the code reads, and the invariants that tie the documents
together are checked: probes on the serving port (native gRPC with TLS off, `appforge health`
with it on), a termination grace above APPFORGE_SHUTDOWN_GRACE, a PodDisruptionBudget and an
autoscaler per Deployment, Services that select its pods and expose its ports, metrics
annotations on the metrics port, the migrations before the services. Each check returns what it
found wrong; `test_each_check_catches_a_broken_manifest` breaks the manifests once per mistake
it is meant to catch and expects that check to say so.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from appforge.cli import installed
from appforge.services.common import secrets
from appforge.services.common.settings import (
    DEFAULT_METRICS_PORTS,
    read_port,
    read_seconds,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TLS = K8S / "components" / "tls"
VARIANTS = ("base", "tls")
# The oldest Kubernetes the manifests are for (native gRPC probes are GA from 1.27), and the
# newest the installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
ENV_NAME = re.compile(r"(APPFORGE_[A-Z0-9_]+|DATABASE_URL|REDIS_URL|(OPENAI|AWS|OTEL)_[A-Z0-9_]+)")
PLACEHOLDER = "change-me"

Doc = dict[str, Any]
Check = Callable[[list[Doc]], list[str]]


# --- kustomize, the part of it deploy/k8s uses --------------------------------------------------

FIELDS = {
    "Kustomization": {"apiVersion", "kind", "resources", "components", "patches", "images"},
    "Component": {"apiVersion", "kind", "resources", "patches"},
}


class Unsupported(Exception):
    """A kustomization asks for something this builder does not implement."""


def _only(mapping: Doc, allowed: set[str], what: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise Unsupported(f"{what}: {sorted(extra)} not implemented by this test's kustomize")


def _yaml_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def build(directory: Path, kind: str = "Kustomization", base: list[Doc] | None = None) -> list[Doc]:
    """What `kustomize build directory` prints, as documents; a Component is applied to `base`
    (what the kustomization naming it accumulated)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if kustomization.get("kind", "Kustomization") != kind:
        raise Unsupported(f"{directory}: expected a {kind}")
    _only(kustomization, FIELDS[kind], str(directory / "kustomization.yaml"))
    docs = list(base or [])
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs += build(path) if path.is_dir() else _yaml_documents(path)
    for entry in kustomization.get("components", []):
        docs = build(directory / entry, "Component", docs)
    for patch in kustomization.get("patches", []):
        _apply_patch(docs, directory, patch)
    for image in kustomization.get("images", []):
        _set_image(docs, image)
    return docs


def _apply_patch(docs: list[Doc], directory: Path, patch: Doc) -> None:
    _only(patch, {"path", "target"}, "a patch")
    _only(patch["target"], {"kind", "name", "labelSelector"}, "a patch target")
    operations = yaml.safe_load((directory / patch["path"]).read_text())
    if not isinstance(operations, list):
        raise Unsupported(f"{patch['path']}: only JSON 6902 patches are implemented")
    targets = [doc for doc in docs if _selected(patch["target"], doc)]
    if not targets:
        raise Unsupported(f"{patch['path']}: the target selects nothing")
    for doc in targets:
        for operation in operations:
            _json_patch(doc, operation)


def _selected(target: Doc, doc: Doc) -> bool:
    if target.get("kind", doc["kind"]) != doc["kind"]:
        return False
    if target.get("name", doc["metadata"]["name"]) != doc["metadata"]["name"]:
        return False
    labels = doc["metadata"].get("labels", {})
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, equals, value = term.partition("=")
        if not equals or key.endswith("!") or value.startswith("="):
            raise Unsupported(f"label selector {term!r}: only key=value is implemented")
        if labels.get(key) != value:
            return False
    return True


def _json_patch(doc: Doc, operation: Doc) -> None:
    """RFC 6902 add, replace and remove."""
    _only(operation, {"op", "path", "value"}, "a JSON patch operation")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last, op = parts[-1], operation["op"]
    if op not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch op {op!r}")
    if isinstance(node, list):
        index = len(node) if last == "-" and op == "add" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        else:
            del node[index]
        return
    if op != "add" and last not in node:
        raise KeyError(f"{operation['path']}: nothing to {op}")
    if op == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(operation["value"])


def _set_image(docs: list[Doc], image: Doc) -> None:
    _only(image, {"name", "newName", "newTag"}, "an images entry")
    for doc in docs:
        for container in _containers(doc):
            name, tag = _split_image(container["image"])
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _split_image(reference: str) -> tuple[str, str]:
    """(name, tag) of `registry/name:tag`; a digest is not implemented."""
    if "@" in reference:
        raise Unsupported(f"image {reference!r}: digests are not implemented")
    head, slash, last = reference.rpartition("/")
    name, _, tag = last.partition(":")
    return head + slash + name, tag or "latest"


@functools.cache
def _built(variant: str) -> tuple[Doc, ...]:
    base = build(K8S)
    # As an overlay with `resources: [deploy/k8s]` and `components: [deploy/k8s/components/tls]`.
    return tuple(build(TLS, "Component", base) if variant == "tls" else base)


def built(variant: str) -> list[Doc]:
    """A fresh copy of the variant's documents (tests may break them)."""
    return copy.deepcopy(list(_built(variant)))


# --- reading the documents ----------------------------------------------------------------------


def _pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def _containers(doc: Doc) -> Iterator[Doc]:
    spec = _pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"].get("labels", {})
    return labels


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
    return doc


def _name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _server(deployment: Doc) -> Doc | None:
    """The container of a Deployment named after it: the one that runs `appforge serve`."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] == deployment["metadata"]["name"]:
            server: Doc = container
            return server
    return None


def _servers(docs: list[Doc], problems: list[str]) -> Iterator[tuple[Doc, Doc]]:
    for deployment in _of(docs, "Deployment"):
        container = _server(deployment)
        if container is None:
            problems.append(f"{_name(deployment)}: no container named after the Deployment")
        else:
            yield deployment, container


def _sources(docs: list[Doc], container: Doc) -> Iterator[tuple[str, dict[str, str]]]:
    """(where from, variables) in the order Kubernetes applies them: envFrom, then env."""
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", "configMapRef") if "configMapRef" in source else ("Secret", "")
        ref = ref or "secretRef"
        name = source[ref]["name"]
        found = [d for d in _of(docs, kind) if d["metadata"]["name"] == name]
        values = found[0].get("data" if kind == "ConfigMap" else "stringData", {}) if found else {}
        yield f"{kind}/{name}" if found else f"missing {kind}/{name}", dict(values)
    literal = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    yield "env", literal
    referenced = {e["name"]: "<valueFrom>" for e in container.get("env", []) if "value" not in e}
    yield "env valueFrom", referenced


def _environment(docs: list[Doc], container: Doc) -> dict[str, str]:
    environment: dict[str, str] = {}
    for _, values in _sources(docs, container):
        environment.update(values)
    return environment


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def _grpc_port(container: Doc) -> int | None:
    port = _flag(container.get("args", []), "--port")
    return int(port) if port is not None and port.isdigit() else None


def _container_ports(container: Doc) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}


def _service_name(container: Doc) -> str:
    """The service `appforge serve NAME` runs."""
    args = container.get("args", [])
    return str(args[1]) if args[:1] == ["serve"] and len(args) > 1 else ""


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@functools.cache
def variables_the_code_reads() -> frozenset[str]:
    """Every string literal in the services' and the CLI's sources that is a variable name."""
    roots = [*sorted((ROOT / "services").glob("*/src")), ROOT / "cli" / "src"]
    names = set()
    for path in (p for root in roots for p in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.fullmatch(node.value):
                    names.add(node.value)
    return frozenset(names)


def _dockerfile(pattern: str) -> str:
    found = re.search(pattern, (ROOT / "Dockerfile").read_text())
    assert found, f"the Dockerfile has no {pattern!r}"
    return found.group(1)


# --- the checks: each returns what it found wrong -----------------------------------------------


def schema_problems(docs: list[Doc], version: str = KUBERNETES_VERSIONS[-1]) -> list[str]:
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            problems.append(f"{_name(doc)} at /{where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{_name(doc)}: {exc.message}")
    return problems


def namespace_problems(docs: list[Doc]) -> list[str]:
    """Namespace-agnostic: `kubectl apply -n` or an overlay's `namespace:` chooses it."""
    return [f"{_name(d)} names a namespace" for d in docs if "namespace" in d["metadata"]]


def unknown_variables(docs: list[Doc]) -> list[str]:
    known = variables_the_code_reads()
    problems = []
    for doc in docs:
        for container in _containers(doc):
            for source, values in _sources(docs, container):
                if source.startswith("missing"):
                    problems.append(f"{_name(doc)} {container['name']}: {source}")
                unknown = sorted(set(values) - known)
                if unknown:
                    where = f"{_name(doc)} {container['name']} ({source})"
                    problems.append(f"{where} sets variables no code reads: {unknown}")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    """The variables the code treats as secrets come from a Secret, never a ConfigMap or a
    literal; the Secret here holds placeholders only."""
    secret = {*secrets.SECRET_VARIABLES, *secrets.URL_VARIABLES}
    problems = [
        f"ConfigMap/{d['metadata']['name']} holds {name}, a secret"
        for d in _of(docs, "ConfigMap")
        for name in sorted(secret & set(d.get("data", {})))
    ]
    for doc in docs:
        for container in _containers(doc):
            for env in container.get("env", []):
                if env["name"] in secret and "value" in env:
                    problems.append(f"{_name(doc)} {container['name']}: {env['name']} literal")
    for doc in _of(docs, "Secret"):
        for name, value in {**doc.get("data", {}), **doc.get("stringData", {})}.items():
            if value and PLACEHOLDER not in value:
                problems.append(f"{_name(doc)}: {name} is not a {PLACEHOLDER!r} placeholder")
    return problems


def required_problems(docs: list[Doc]) -> list[str]:
    """What a pod silently misbehaves without: every container talks to PostgreSQL (without
    DATABASE_URL each pod would keep its own SQLite file), servers fan out through Redis and
    verify tokens (without a key `appforge serve` refuses to start)."""
    problems = []
    keys = {"APPFORGE_AUTH_JWT_SECRET", "APPFORGE_AUTH_JWT_SECRET_FILE"}
    keys.add("APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE")
    for doc in docs:
        server_of = _server(doc) if doc["kind"] == "Deployment" else None
        for container in _containers(doc):
            environment = _environment(docs, container)
            needed = {"DATABASE_URL"}
            if container is server_of:
                needed.add("REDIS_URL")
            missing = sorted(needed - set(environment))
            if container is server_of and not keys & set(environment):
                missing.append("a token key (APPFORGE_AUTH_JWT_SECRET)")
            if missing:
                problems.append(f"{_name(doc)} {container['name']} lacks {missing}")
    return problems


def _probe_problems(where: str, probe: Doc | None, port: int, tls: bool) -> list[str]:
    if probe is None:
        return [f"{where}: missing"]
    if not tls:
        if probe.get("grpc", {}).get("port") != port:
            return [f"{where}: not a native gRPC probe on {port}: {probe}"]
        return []
    command = probe.get("exec", {}).get("command", [])
    # `appforge health` dials 127.0.0.1 and the image's service port, or the address given.
    addresses = [a for a in command[2:] if not a.startswith("-") and ":" in a]
    if command[:1] != ["/opt/appforge/bin/appforge"] or command[1:2] != ["health"]:
        return [f"{where}: TLS is on, so not a native gRPC probe but `appforge health`: {probe}"]
    if addresses not in ([], [f"127.0.0.1:{port}"]):
        return [f"{where}: checks {addresses}, not 127.0.0.1:{port}"]
    return []


def probe_problems(docs: list[Doc]) -> list[str]:
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        name, args = deployment["metadata"]["name"], container.get("args", [])
        port = _grpc_port(container)
        if args[:2] != ["serve", name] or _flag(args, "--host") != "0.0.0.0" or port is None:
            problems.append(f"{_name(deployment)}: runs {args}, not serve {name} --host 0.0.0.0")
            continue
        if _container_ports(container).get("grpc") != port:
            problems.append(f"{_name(deployment)}: container port grpc is not --port {port}")
        tls = bool(_environment(docs, container).get("APPFORGE_TLS_CERT_FILE"))
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind == "startupProbe" and kind not in container:
                continue
            where = f"{_name(deployment)} {kind}"
            problems += _probe_problems(where, container.get(kind), port, tls)
    return problems


def file_problems(docs: list[Doc]) -> list[str]:
    """Every *_FILE variable names a file in a volume the container mounts."""
    problems = []
    for doc in docs:
        for container in _containers(doc):
            mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
            for name, value in _environment(docs, container).items():
                if name.endswith("_FILE") and not any(value.startswith(m) for m in mounts):
                    problems.append(f"{_name(doc)} {container['name']}: {name}={value} unmounted")
    return problems


def _pre_stop_seconds(container: Doc) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    if command[:1] == ["sleep"]:
        return float(command[1])
    return float(pre_stop.get("sleep", {}).get("seconds", 0))


def grace_problems(docs: list[Doc]) -> list[str]:
    """SIGTERM comes after the preStop hook; the kubelet kills at terminationGracePeriodSeconds
    (30 by default) after it began, which must leave the server its APPFORGE_SHUTDOWN_GRACE."""
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        environment = _environment(docs, container)
        grace = read_seconds(environment, "APPFORGE_SHUTDOWN_GRACE", 5.0)
        pre_stop = _pre_stop_seconds(container)
        period = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if not period > pre_stop + grace:
            problems.append(
                f"{_name(deployment)}: terminationGracePeriodSeconds {period} is not above "
                f"the preStop {pre_stop} s + APPFORGE_SHUTDOWN_GRACE {grace} s"
            )
    return problems


def _pdb_problems(deployment: Doc, pdbs: list[Doc], minimum: int) -> list[str]:
    labels = _pod_labels(deployment)
    mine = [p for p in pdbs if _matches(p["spec"]["selector"].get("matchLabels", {}), labels)]
    if len(mine) != 1:
        return [f"{_name(deployment)}: {len(mine)} PodDisruptionBudgets select its pods"]
    spec = mine[0]["spec"]
    # What an eviction may leave at the autoscaler's minimum: at least one pod serving.
    left = spec["minAvailable"] if "minAvailable" in spec else minimum - spec["maxUnavailable"]
    if not isinstance(left, int) or left < 1:
        return [f"{_name(deployment)}: its PodDisruptionBudget lets every pod go at {minimum}"]
    return []


def disruption_problems(docs: list[Doc]) -> list[str]:
    """One PodDisruptionBudget and one CPU autoscaler per Deployment, which leaves the replica
    count to the autoscaler and keeps a pod serving through evictions."""
    problems = []
    for deployment in _of(docs, "Deployment"):
        target = {"apiVersion": "apps/v1", "kind": "Deployment"}
        target["name"] = deployment["metadata"]["name"]
        hpas = [
            h for h in _of(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"] == target
        ]
        if len(hpas) != 1:
            problems.append(f"{_name(deployment)}: {len(hpas)} autoscalers target it")
            continue
        spec = hpas[0]["spec"]
        cpu = [m for m in spec["metrics"] if m.get("resource", {}).get("name") == "cpu"]
        if not cpu or cpu[0]["resource"]["target"]["type"] != "Utilization":
            problems.append(f"{_name(deployment)}: its autoscaler does not follow CPU use")
        minimum = spec.get("minReplicas", 1)
        if not 2 <= minimum <= spec["maxReplicas"]:
            problems.append(
                f"{_name(deployment)}: autoscaled from {minimum} to {spec['maxReplicas']}"
            )
        if "replicas" in deployment["spec"]:
            problems.append(f"{_name(deployment)}: sets replicas, which its autoscaler owns")
        problems += _pdb_problems(deployment, _of(docs, "PodDisruptionBudget"), minimum)
    return problems


def metrics_problems(docs: list[Doc]) -> list[str]:
    """Pods say where Prometheus finds them: the port `serve` opens for metrics."""
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        environment = _environment(docs, container)
        flag = _flag(container.get("args", []), "--metrics-port")
        port = int(flag) if flag is not None else read_port(environment, "APPFORGE_METRICS_PORT")
        if port is None:
            port = DEFAULT_METRICS_PORTS.get(_service_name(container), 0)
        expected = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics"}
        expected["prometheus.io/port"] = str(port)
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if {k: annotations.get(k) for k in expected} != expected:
            problems.append(f"{_name(deployment)}: annotations {annotations}, metrics on {port}")
        if _container_ports(container).get("metrics") != port:
            problems.append(f"{_name(deployment)}: no container port metrics {port}")
    return problems


def _service_port_problems(deployment: Doc, container: Doc, service: Doc) -> list[str]:
    ports = _container_ports(container)
    problems = []
    exposed = set()
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        number = ports.get(target) if isinstance(target, str) else target
        if number not in ports.values():
            problems.append(f"{_name(service)} port {port['name']}: no container port {target}")
        exposed.add(number)
        if port["name"] == "grpc" and (port.get("appProtocol"), port["port"]) != ("grpc", number):
            problems.append(f"{_name(service)}: grpc is not {number} with appProtocol grpc")
    unexposed = sorted(set(ports.values()) - exposed)
    if unexposed or "grpc" not in {p["name"] for p in service["spec"]["ports"]}:
        problems.append(f"{_name(service)}: does not expose {unexposed or 'a port named grpc'}")
    return problems


def service_problems(docs: list[Doc]) -> list[str]:
    """One Service per Deployment selects its pods (and no other pod) and exposes every port."""
    problems: list[str] = []
    pods = [d for d in docs if _pod_spec(d) is not None]
    for deployment, container in _servers(docs, problems):
        labels = _pod_labels(deployment)
        services = [
            s for s in _of(docs, "Service") if _matches(s["spec"].get("selector", {}), labels)
        ]
        if len(services) != 1:
            problems.append(f"{_name(deployment)}: {len(services)} Services select its pods")
            continue
        selector = services[0]["spec"]["selector"]
        others = [
            _name(p) for p in pods if p is not deployment and _matches(selector, _pod_labels(p))
        ]
        if others:
            problems.append(f"{_name(services[0])} also selects the pods of {others}")
        problems += _service_port_problems(deployment, container, services[0])
    return problems


def address_problems(docs: list[Doc]) -> list[str]:
    """APPFORGE_<SERVICE>_ADDR, wherever set, is the Service that fronts that service."""
    fronts: dict[str, str] = {}
    for deployment in _of(docs, "Deployment"):
        container = _server(deployment)
        labels = _pod_labels(deployment)
        for service in _of(docs, "Service"):
            if container is not None and _matches(service["spec"].get("selector", {}), labels):
                address = f"{service['metadata']['name']}:{_grpc_port(container)}"
                fronts[_service_name(container)] = address
    problems = []
    for doc in docs:
        for container in _containers(doc):
            environment = _environment(docs, container)
            for name in ("chat", "builder", "deployer"):
                value = environment.get(f"APPFORGE_{name.upper()}_ADDR")
                if value is not None and value != fronts.get(name):
                    problems.append(f"{_name(doc)}: {name} at {value}, not {fronts.get(name)}")
    return problems


def _waits_for_schema(docs: list[Doc], deployment: Doc, image: str) -> bool:
    spec = deployment["spec"]["template"]["spec"]
    inits = spec.get("initContainers", [])
    if not inits or inits[0]["image"] != image:
        return False
    command = inits[0].get("command", [])
    script = Path(command[1]) if command[:1] == ["/opt/appforge/bin/python"] else Path("/")
    mounts = {m["mountPath"]: m["name"] for m in inits[0].get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    volume = volumes.get(mounts.get(str(script.parent), ""), {})
    config = volume.get("configMap", {}).get("name")
    found = [c for c in _of(docs, "ConfigMap") if c["metadata"]["name"] == config]
    return bool(found) and "why_not_ready" in found[0].get("data", {}).get(script.name, "")


def migration_problems(docs: list[Doc]) -> list[str]:
    """Each service's image migrates in a Job, and its pods wait for that schema first."""
    problems: list[str] = []
    migrating = {
        c["image"] for j in _of(docs, "Job") for c in _containers(j) if c.get("args") == ["migrate"]
    }
    for deployment, container in _servers(docs, problems):
        image = container["image"]
        if image not in migrating:
            problems.append(f"{_name(deployment)}: no Job runs `appforge migrate` in {image}")
        if not _waits_for_schema(docs, deployment, image):
            problems.append(f"{_name(deployment)}: no init container waits for its schema")
    return problems


def _container_problems(where: str, container: Doc) -> list[str]:
    context = container.get("securityContext", {})
    problems = []
    if context.get("readOnlyRootFilesystem") is not True or context.get("allowPrivilegeEscalation"):
        problems.append(f"{where}: a writable root or privilege escalation")
    if context.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: keeps capabilities")
    if "/tmp" not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
        problems.append(f"{where}: no writable /tmp")
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        if set(resources.get(bound, {})) != {"cpu", "memory"}:
            problems.append(f"{where}: {bound} are not cpu and memory")
    return problems


def security_problems(docs: list[Doc]) -> list[str]:
    """As the Dockerfile runs them: its non-root user; and a read-only root, writable volumes
    where the code writes (/tmp; the data directory of the servers), bounded resources."""
    uid = int(_dockerfile(r"--uid (\d+)"))
    data_dir = _dockerfile(r"APPFORGE_DATA_DIR=(\S+)")
    problems = []
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        context = spec.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") != uid:
            problems.append(f"{_name(doc)}: not run as the image's user {uid}")
        for container in _containers(doc):
            problems += _container_problems(f"{_name(doc)} {container['name']}", container)
        server = _server(doc) if doc["kind"] == "Deployment" else None
        if server is not None and data_dir not in {m["mountPath"] for m in server["volumeMounts"]}:
            problems.append(f"{_name(doc)}: {data_dir} (APPFORGE_DATA_DIR) is not a volume")
    return problems


def deploy_root_problems(docs: list[Doc]) -> list[str]:
    """The deployers' `local` target publishes to one volume that all replicas mount."""
    problems = []
    for deployment in _of(docs, "Deployment"):
        container = _server(deployment)
        root = _environment(docs, container).get("APPFORGE_DEPLOY_ROOT") if container else None
        if container is None or _service_name(container) != "deployer":
            continue
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        claim = volumes.get(mounts.get(root or "", ""), {}).get("persistentVolumeClaim", {})
        pvcs = [
            p
            for p in _of(docs, "PersistentVolumeClaim")
            if p["metadata"]["name"] == claim.get("claimName")
        ]
        if not pvcs or "ReadWriteMany" not in pvcs[0]["spec"]["accessModes"]:
            problems.append(
                f"{_name(deployment)}: APPFORGE_DEPLOY_ROOT={root} is not on a RWX claim"
            )
    return problems


def image_problems(docs: list[Doc]) -> list[str]:
    """The pods of a service run that service's image, and `images:` can retag every one."""
    listed = {i["name"] for i in yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]}
    problems = []
    for doc in docs:
        service = _pod_labels(doc).get("app.kubernetes.io/name") if _pod_spec(doc) else None
        for container in _containers(doc):
            name, _ = _split_image(container["image"])
            if name.rpartition("/")[2] != f"appforge-{service}" or name not in listed:
                problems.append(f"{_name(doc)} {container['name']}: image {container['image']}")
    return problems


CHECKS: tuple[Check, ...] = (
    schema_problems,
    namespace_problems,
    unknown_variables,
    secret_problems,
    required_problems,
    probe_problems,
    file_problems,
    grace_problems,
    disruption_problems,
    metrics_problems,
    service_problems,
    address_problems,
    migration_problems,
    security_problems,
    deploy_root_problems,
    image_problems,
)


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_document_is_valid_kubernetes(variant: str, version: str) -> None:
    docs = built(variant)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    assert {"Job", "ConfigMap", "Secret", "PersistentVolumeClaim"} <= kinds
    assert schema_problems(docs, version) == []


@pytest.mark.parametrize("check", CHECKS[1:], ids=lambda c: c.__name__)
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_manifests_hold(variant: str, check: Check) -> None:
    assert check(built(variant)) == []


def test_there_is_one_deployment_per_service() -> None:
    docs = built("base")
    serving = sorted(_service_name(c) for d in _of(docs, "Deployment") if (c := _server(d)))
    assert serving == sorted(installed.SERVICES)


def test_tls_switches_every_probe_to_appforge_health() -> None:
    for deployment in _of(built("tls"), "Deployment"):
        container = _server(deployment)
        assert container is not None
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" not in container[kind] and "exec" in container[kind], kind
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "tls", "secret": {"secretName": "appforge-tls", "defaultMode": 0o440}} in (
            volumes
        )


def _everything_set(docs: list[Doc]) -> set[str]:
    return {
        name
        for doc in docs
        for container in _containers(doc)
        for _, values in _sources(docs, container)
        for name in values
    }


def test_the_variables_checked_are_the_ones_set() -> None:
    """The scan of the code finds the settings (so the subset check means something), and the
    manifests set the ones a deployment needs."""
    assert {"APPFORGE_SHUTDOWN_GRACE", "APPFORGE_METRICS_PORT", "DATABASE_URL"} <= (
        variables_the_code_reads()
    )
    assert {"APPFORGE_TLS_CERT_FILE", "APPFORGE_AUTH_JWT_SECRET", "REDIS_URL"} <= _everything_set(
        built("tls")
    )


def _put(doc: Doc, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if value is None:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def _break(kind: str, name: str, path: str, value: Any) -> Callable[[list[Doc]], None]:
    """Set (None: delete) `path`, dot-separated, in the document `kind/name`."""
    return lambda docs: _put(_named(docs, kind, name), path, value)


def _break_server(name: str, path: str, value: Any) -> Callable[[list[Doc]], None]:
    """As `_break`, in the service container of the Deployment `name`."""

    def _apply(docs: list[Doc]) -> None:
        container = _server(_named(docs, "Deployment", name))
        assert container is not None
        _put(container, path, value)

    return _apply


def _add_env(name: str, variable: str, value: str) -> Callable[[list[Doc]], None]:
    def _apply(docs: list[Doc]) -> None:
        container = _server(_named(docs, "Deployment", name))
        assert container is not None
        container["env"].append({"name": variable, "value": value})

    return _apply


def _drop(kind: str, name: str) -> Callable[[list[Doc]], None]:
    return lambda docs: docs.remove(_named(docs, kind, name))


POD = "spec.template.spec"
BROKEN = [
    (schema_problems, "base", _break_server("chat", "bogus", 1)),
    (schema_problems, "tls", _break("HorizontalPodAutoscaler", "chat", "spec.minReplicas", "2")),
    (namespace_problems, "base", _break("Service", "chat", "metadata.namespace", "prod")),
    (unknown_variables, "base", _add_env("chat", "APPFORGE_NOT_A_SETTING", "1")),
    (unknown_variables, "base", _break("ConfigMap", "appforge-config", "data.APPFORGE_CHAT", "x")),
    (unknown_variables, "base", _break("Secret", "appforge-secrets", "stringData.OPENAI_KEY", "")),
    (unknown_variables, "base", _break_server("builder", "envFrom.0.configMapRef.name", "cfg")),
    (secret_problems, "base", _break("ConfigMap", "appforge-config", "data.REDIS_URL", "redis://")),
    (secret_problems, "base", _add_env("builder", "OPENAI_API_KEY", "sk-live")),
    (
        secret_problems,
        "base",
        _break(
            "Secret",
            "appforge-secrets",
            "stringData.DATABASE_URL",
            "postgresql+asyncpg://u:pw@db/a",
        ),
    ),
    (required_problems, "base", _break_server("deployer", "envFrom", [])),
    (required_problems, "base", _break("Secret", "appforge-secrets", "stringData.REDIS_URL", None)),
    (
        required_problems,
        "base",
        _break("Secret", "appforge-secrets", "stringData.APPFORGE_AUTH_JWT_SECRET", None),
    ),
    (probe_problems, "base", _break_server("chat", "readinessProbe.grpc.port", 50052)),
    (probe_problems, "base", _break_server("builder", "livenessProbe", None)),
    (probe_problems, "base", _break_server("deployer", "args.5", "50063")),
    (probe_problems, "base", _break_server("chat", "ports.0.containerPort", 50061)),
    (probe_problems, "base", _add_env("chat", "APPFORGE_TLS_CERT_FILE", "/etc/tls/tls.pem")),
    (probe_problems, "tls", _break_server("builder", "readinessProbe.exec.command", ["true"])),
    (
        probe_problems,
        "tls",
        _break_server("chat", "livenessProbe.exec.command.3", "127.0.0.1:50052"),
    ),
    (file_problems, "tls", _break_server("deployer", "volumeMounts", [])),
    (
        grace_problems,
        "base",
        _break("Deployment", "chat", f"{POD}.terminationGracePeriodSeconds", 25),
    ),
    (
        grace_problems,
        "base",
        _break("Deployment", "builder", f"{POD}.terminationGracePeriodSeconds", None),
    ),
    (
        grace_problems,
        "tls",
        _break("ConfigMap", "appforge-config", "data.APPFORGE_SHUTDOWN_GRACE", "30"),
    ),
    (grace_problems, "base", _break_server("deployer", "lifecycle.preStop.exec.command.1", "10")),
    (
        disruption_problems,
        "base",
        _break(
            "PodDisruptionBudget",
            "chat",
            "spec.selector.matchLabels.app\\.kubernetes\\.io/name",
            "x",
        ),
    ),
    (disruption_problems, "base", _drop("HorizontalPodAutoscaler", "builder")),
    (disruption_problems, "base", _drop("PodDisruptionBudget", "deployer")),
    (
        disruption_problems,
        "base",
        _break("HorizontalPodAutoscaler", "chat", "spec.scaleTargetRef.name", "cht"),
    ),
    (disruption_problems, "base", _break("HorizontalPodAutoscaler", "chat", "spec.minReplicas", 1)),
    (disruption_problems, "base", _break("Deployment", "deployer", "spec.replicas", 3)),
    (
        disruption_problems,
        "base",
        _break("PodDisruptionBudget", "builder", "spec.maxUnavailable", 2),
    ),
    (metrics_problems, "base", _break("Deployment", "chat", f"{POD}", None)),
]
