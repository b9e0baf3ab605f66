"""deploy/k8s, checked offline.

The kustomization is built here as kustomize builds it, for the fields it uses (anything else
is an error, never ignored): the base, and the base with `components/tls`. Every document is
validated against the Kubernetes schemas (kubernetes-validate, strict: no unknown field); every
variable a manifest sets must be one the code reads; and the invariants that tie the documents
together are checked: probes on the serving port (native gRPC with TLS off, `appforge health`
with it on), a termination grace above APPFORGE_SHUTDOWN_GRACE, one PodDisruptionBudget and one
autoscaler per Deployment, Services that select its pods and expose its ports, metrics
annotations on the metrics port, the migrations before the services.

Each check returns what it found wrong; `test_each_check_catches_a_broken_manifest` breaks the
manifests once per mistake a check is there to catch and expects that check to report it.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import copy
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from appforge.cli import installed
from appforge.services.common import db, migrate, secrets
from appforge.services.common.settings import (
    DEFAULT_METRICS_PORTS,
    Settings,
    read_count,
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
ENV_NAME = re.compile(r"APPFORGE_[A-Z0-9_]+|DATABASE_URL|REDIS_URL|(OPENAI|AWS|OTEL)_[A-Z0-9_]+")
PLACEHOLDER = "change-me"
# What the operator creates next to the manifests (README.md in deploy/k8s), not in them.
EXTERNAL = {("Secret", "appforge-tls")}
# PostgreSQL's default max_connections (100) less its superuser_reserved_connections (3):
# what the pods may open on a database left at its defaults.
POSTGRES_CONNECTIONS = 100 - 3
APPFORGE = "/opt/appforge/bin/appforge"
PYTHON = "/opt/appforge/bin/python"

Doc = dict[str, Any]
Check = Callable[[list[Doc]], list[str]]


# --- kustomize: the part of it deploy/k8s uses --------------------------------------------------

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


def _documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def build(directory: Path, kind: str = "Kustomization", base: list[Doc] | None = None) -> list[Doc]:
    """What `kustomize build directory` prints; a Component is applied to `base`, what the
    kustomization naming it has accumulated so far."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if kustomization.get("kind", "Kustomization") != kind:
        raise Unsupported(f"{directory}: expected a {kind}")
    _only(kustomization, FIELDS[kind], str(directory / "kustomization.yaml"))
    docs = list(base or [])
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs += build(path) if path.is_dir() else _documents(path.read_text())
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
        raise Unsupported(f"{patch['path']}: its target selects nothing")
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
    op = operation["op"]
    if op not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch op {op!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, value)
        elif op == "replace":
            node[index] = value
        else:
            del node[index]
    elif op != "add" and last not in node:
        raise KeyError(f"{operation['path']}: nothing there to {op}")
    elif op == "remove":
        del node[last]
    else:
        node[last] = value


def _set_image(docs: list[Doc], image: Doc) -> None:
    _only(image, {"name", "newName", "newTag"}, "an images entry")
    for doc in docs:
        for container in _containers(doc):
            name, tag = _split_image(container["image"])
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _split_image(reference: str) -> tuple[str, str]:
    """(name, tag) of `registry/name:tag`."""
    if "@" in reference:
        raise Unsupported(f"image {reference!r}: digests are not implemented")
    head, slash, last = reference.rpartition("/")
    name, _, tag = last.partition(":")
    return head + slash + name, tag or "latest"


@functools.cache
def _built(variant: str) -> tuple[Doc, ...]:
    base = build(K8S)
    # What an overlay with `resources: [deploy/k8s]`, `components: [deploy/k8s/components/tls]`
    # builds.
    return tuple(build(TLS, "Component", base) if variant == "tls" else base)


def built(variant: str) -> list[Doc]:
    """A fresh copy of the variant's documents: a test may break them."""
    return copy.deepcopy(list(_built(variant)))


# --- reading the documents ----------------------------------------------------------------------


def _name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _of(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in _of(docs, kind) if d["metadata"]["name"] == name), None)


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    doc = _find(docs, kind, name)
    assert doc is not None, f"no {kind}/{name}"
    return doc


def _pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] not in ("Deployment", "Job"):
        return None
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def _pod_labels(doc: Doc) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"].get("labels", {})
    return labels


def _containers(doc: Doc) -> Iterator[Doc]:
    spec = _pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _server(deployment: Doc) -> Doc | None:
    """The container named after its Deployment: the one that runs `appforge serve`."""
    spec = _pod_spec(deployment) if deployment["kind"] == "Deployment" else None
    containers = spec["containers"] if spec is not None else []
    return next((c for c in containers if c["name"] == deployment["metadata"]["name"]), None)


def _servers(docs: list[Doc], problems: list[str]) -> Iterator[tuple[Doc, Doc]]:
    for deployment in _of(docs, "Deployment"):
        container = _server(deployment)
        if container is None:
            problems.append(f"{_name(deployment)}: no container named after the Deployment")
        else:
            yield deployment, container


def _values(doc: Doc) -> dict[str, str]:
    if doc["kind"] == "ConfigMap":
        return dict(doc.get("data", {}))
    data = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
    return {**data, **doc.get("stringData", {})}


def _sources(docs: list[Doc], container: Doc) -> Iterator[tuple[str, dict[str, str]]]:
    """(where from, the variables it sets), in the order Kubernetes applies them (a later one
    wins): envFrom, then env."""
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", "configMapRef") if "configMapRef" in source else ("Secret", "")
        found = _find(docs, kind, source[ref or "secretRef"]["name"])
        if "prefix" in source:
            raise Unsupported("envFrom with a prefix")
        if found is not None:  # reference_problems reports the missing ones
            yield _name(found), _values(found)
    env = container.get("env", [])
    yield "env", {e["name"]: e.get("value", "<valueFrom>") for e in env}


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
    ports = container.get("ports", [])
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in ports}


def _service_of(container: Doc) -> str:
    """The service `appforge serve SERVICE` runs."""
    args = container.get("args", [])
    return str(args[1]) if args[:1] == ["serve"] and len(args) > 1 else ""


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _mounts(container: Doc) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def _volumes(doc: Doc) -> dict[str, Doc]:
    spec = _pod_spec(doc) or {}
    return {v["name"]: v for v in spec.get("volumes", [])}


@functools.cache
def variables_the_code_reads() -> frozenset[str]:
    """Every string literal in the services' and the CLI's sources that is a variable name."""
    roots = [*sorted((ROOT / "services").glob("*/src")), ROOT / "cli" / "src"]
    names = set()
    for path in (p for root in roots for p in sorted(root.rglob("*.py"))):
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
    found = (_schema_problem(json.dumps(doc, sort_keys=True), version) for doc in docs)
    return [problem for problem in found if problem is not None]


@functools.cache
def _schema_problem(document: str, version: str) -> str | None:
    """What is wrong with one document (as JSON: the variants share most of theirs, and
    validating one takes ~10 ms)."""
    doc = json.loads(document)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"{_name(doc)} at /{where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return f"{_name(doc)}: {exc.message}"
    return None


def namespace_problems(docs: list[Doc]) -> list[str]:
    """Namespace-agnostic: `kubectl apply -n` or an overlay's `namespace:` chooses it."""
    return [f"{_name(d)} names a namespace" for d in docs if "namespace" in d["metadata"]]


def _references(doc: Doc) -> Iterator[tuple[str, str]]:
    for container in _containers(doc):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            else:
                yield "Secret", source["secretRef"]["name"]
    for volume in _volumes(doc).values():
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]


def reference_problems(docs: list[Doc]) -> list[str]:
    """Every ConfigMap, Secret and claim a pod names is in the build (or made beside it)."""
    return [
        f"{_name(doc)} refers to {kind}/{name}, which is not there"
        for doc in docs
        for kind, name in _references(doc)
        if _find(docs, kind, name) is None and (kind, name) not in EXTERNAL
    ]


def unknown_variables(docs: list[Doc]) -> list[str]:
    known = variables_the_code_reads()
    problems = []
    for doc in docs:
        for container in _containers(doc):
            for source, values in _sources(docs, container):
                unknown = sorted(set(values) - known)
                if unknown:
                    where = f"{_name(doc)} {container['name']} ({source})"
                    problems.append(f"{where} sets variables no code reads: {unknown}")
    return problems


def secret_problems(docs: list[Doc]) -> list[str]:
    """The variables the code treats as secrets come from a Secret, never from a ConfigMap or
    a literal; and the Secret here holds placeholders only."""
    secret = {*secrets.SECRET_VARIABLES, *secrets.URL_VARIABLES}
    problems = [
        f"{_name(doc)} holds {name}, a secret"
        for doc in _of(docs, "ConfigMap")
        for name in sorted(secret & set(_values(doc)))
    ]
    for doc in docs:
        for container in _containers(doc):
            for env in container.get("env", []):
                if env["name"] in secret and "value" in env:
                    problems.append(f"{_name(doc)} {container['name']}: {env['name']} literal")
    for doc in _of(docs, "Secret"):
        for name, value in _values(doc).items():
            if value and PLACEHOLDER not in value:
                problems.append(f"{_name(doc)}: {name} is not a {PLACEHOLDER!r} placeholder")
    return problems


def required_problems(docs: list[Doc]) -> list[str]:
    """What a pod would quietly do wrong without: every container needs DATABASE_URL (without
    it each pod keeps its own SQLite file); servers need REDIS_URL (without it replicas do not
    see each other's changes) and a token key (without one `appforge serve` refuses to start)."""
    keys = {"APPFORGE_AUTH_JWT_SECRET", "APPFORGE_AUTH_JWT_SECRET_FILE"}
    keys.add("APPFORGE_AUTH_JWT_PUBLIC_KEY_FILE")
    problems = []
    for doc in docs:
        server = _server(doc)
        for container in _containers(doc):
            environment = set(_environment(docs, container))
            missing = sorted({"DATABASE_URL"} - environment)
            if container is server:
                missing += sorted({"REDIS_URL"} - environment)
                missing += [] if keys & environment else ["APPFORGE_AUTH_JWT_SECRET"]
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
    # Native gRPC probes speak plaintext only; `appforge health` dials 127.0.0.1 and the port
    # of the image's service with the APPFORGE_TLS_* files, or the address it is given.
    command = probe.get("exec", {}).get("command", [])
    if command[:2] != [APPFORGE, "health"]:
        return [f"{where}: TLS is on, so `appforge health` rather than {probe}"]
    addresses = [a for a in command[2:] if ":" in a]
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
            problems.append(f"{_name(deployment)}: its container port grpc is not {port}")
        tls = bool(_environment(docs, container).get("APPFORGE_TLS_CERT_FILE"))
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind != "startupProbe" or kind in container:
                where = f"{_name(deployment)} {kind}"
                problems += _probe_problems(where, container.get(kind), port, tls)
    return problems


def file_problems(docs: list[Doc]) -> list[str]:
    """Every *_FILE variable names a file in a volume the container mounts."""
    problems = []
    for doc in docs:
        for container in _containers(doc):
            mounts = [path.rstrip("/") + "/" for path in _mounts(container)]
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
    """The kubelet kills terminationGracePeriodSeconds (default 30) after it ran the preStop
    hook, and SIGTERM comes after the hook: that must leave APPFORGE_SHUTDOWN_GRACE whole."""
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        environment = _environment(docs, container)
        grace = read_seconds(environment, "APPFORGE_SHUTDOWN_GRACE", 5.0)
        pre_stop = _pre_stop_seconds(container)
        period = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if not period > pre_stop + grace:
            problems.append(
                f"{_name(deployment)}: terminationGracePeriodSeconds {period} is not above "
                f"preStop {pre_stop} s + APPFORGE_SHUTDOWN_GRACE {grace} s"
            )
    return problems


def _budget_problems(deployment: Doc, budgets: list[Doc], minimum: int) -> list[str]:
    labels = _pod_labels(deployment)
    mine = [b for b in budgets if _matches(b["spec"]["selector"].get("matchLabels", {}), labels)]
    if len(mine) != 1:
        return [f"{_name(deployment)}: {len(mine)} PodDisruptionBudgets select its pods"]
    spec = mine[0]["spec"]
    # What evictions may leave of the autoscaler's minimum: at least one pod serving.
    left = spec["minAvailable"] if "minAvailable" in spec else minimum - spec["maxUnavailable"]
    if not isinstance(left, int) or left < 1:
        return [f"{_name(deployment)}: its PodDisruptionBudget may leave {left} of {minimum}"]
    return []


def _autoscaler_problems(deployment: Doc, spec: Doc) -> list[str]:
    problems = []
    cpu = [m for m in spec.get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
    if not cpu or cpu[0]["resource"]["target"].get("type") != "Utilization":
        problems.append(f"{_name(deployment)}: its autoscaler does not follow CPU utilization")
    minimum, maximum = spec.get("minReplicas", 1), spec["maxReplicas"]
    if not 2 <= minimum <= maximum:
        problems.append(f"{_name(deployment)}: autoscaled from {minimum} to {maximum}")
    if "replicas" in deployment["spec"]:
        problems.append(f"{_name(deployment)}: sets replicas, which its autoscaler owns")
    return problems


def _autoscalers(docs: list[Doc], deployment: Doc) -> list[Doc]:
    target = {"apiVersion": "apps/v1", "kind": "Deployment"}
    target["name"] = deployment["metadata"]["name"]
    return [
        a for a in _of(docs, "HorizontalPodAutoscaler") if a["spec"]["scaleTargetRef"] == target
    ]


def disruption_problems(docs: list[Doc]) -> list[str]:
    """One PodDisruptionBudget and one CPU autoscaler per Deployment: the autoscaler owns the
    replica count, and evictions always leave a pod serving."""
    problems = []
    for deployment in _of(docs, "Deployment"):
        autoscalers = _autoscalers(docs, deployment)
        if len(autoscalers) != 1:
            problems.append(f"{_name(deployment)}: {len(autoscalers)} autoscalers target it")
            continue
        spec = autoscalers[0]["spec"]
        problems += _autoscaler_problems(deployment, spec)
        budgets = _of(docs, "PodDisruptionBudget")
        problems += _budget_problems(deployment, budgets, spec.get("minReplicas", 1))
    return problems


def connection_problems(docs: list[Doc]) -> list[str]:
    """With every autoscaler at its maximum, the pods' connection budgets (each process opens
    at most APPFORGE_DB_POOL_SIZE, all its pools together) and one connection per migration
    Job fit a PostgreSQL left at its defaults."""
    problems: list[str] = []
    parts = []
    total = jobs = len(_of(docs, "Job"))
    for deployment, container in _servers(docs, problems):
        pool = read_count(
            _environment(docs, container), "APPFORGE_DB_POOL_SIZE", Settings().db_pool_size
        )
        for autoscaler in _autoscalers(docs, deployment)[:1]:  # disruption_problems: just one
            maximum = autoscaler["spec"]["maxReplicas"]
            total += maximum * pool
            parts.append(f"{_name(deployment)} {maximum} x {pool}")
    if total > POSTGRES_CONNECTIONS:
        problems.append(
            f"up to {total} PostgreSQL connections ({', '.join(parts)}, {jobs} Jobs), above "
            f"the {POSTGRES_CONNECTIONS} of a PostgreSQL at its defaults"
        )
    return problems


def metrics_problems(docs: list[Doc]) -> list[str]:
    """The pods tell Prometheus the port `serve` opens for metrics."""
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        flag = _flag(container.get("args", []), "--metrics-port")
        environment = _environment(docs, container)
        port = int(flag) if flag is not None else read_port(environment, "APPFORGE_METRICS_PORT")
        if port is None:
            port = DEFAULT_METRICS_PORTS.get(_service_of(container), 0)
        expected = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics"}
        expected["prometheus.io/port"] = str(port)
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if {k: annotations.get(k) for k in expected} != expected:
            problems.append(f"{_name(deployment)}: annotations {annotations}, metrics on {port}")
        if _container_ports(container).get("metrics") != port:
            problems.append(f"{_name(deployment)}: no container port metrics {port}")
    return problems


def _service_port_problems(container: Doc, service: Doc) -> list[str]:
    ports = _container_ports(container)
    problems = []
    exposed = set()
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        number = ports.get(target) if isinstance(target, str) else target
        if number not in ports.values():
            problems.append(f"{_name(service)} {port['name']}: no container port {target}")
        exposed.add(number)
        if port["name"] == "grpc" and (port.get("appProtocol"), port["port"]) != ("grpc", number):
            problems.append(f"{_name(service)}: port grpc is not {number}, appProtocol grpc")
    unexposed = sorted(set(ports.values()) - exposed)
    if unexposed:
        problems.append(f"{_name(service)}: does not expose the container ports {unexposed}")
    if "grpc" not in {p["name"] for p in service["spec"]["ports"]}:
        problems.append(f"{_name(service)}: no port named grpc")
    return problems


def service_problems(docs: list[Doc]) -> list[str]:
    """One Service per Deployment selects its pods, and no other pods, and exposes its ports."""
    problems: list[str] = []
    pods = [d for d in docs if _pod_spec(d) is not None]
    for deployment, container in _servers(docs, problems):
        labels = _pod_labels(deployment)
        mine = [s for s in _of(docs, "Service") if _matches(s["spec"].get("selector", {}), labels)]
        if len(mine) != 1:
            problems.append(f"{_name(deployment)}: {len(mine)} Services select its pods")
            continue
        selector = mine[0]["spec"]["selector"]
        others = [
            _name(p) for p in pods if p is not deployment and _matches(selector, _pod_labels(p))
        ]
        if others:
            problems.append(f"{_name(mine[0])} also selects the pods of {others}")
        problems += _service_port_problems(container, mine[0])
    return problems


def address_problems(docs: list[Doc]) -> list[str]:
    """APPFORGE_<SERVICE>_ADDR, wherever it is set, is the Service in front of that service."""
    fronts = {}
    for deployment in _of(docs, "Deployment"):
        container = _server(deployment)
        for service in _of(docs, "Service"):
            selector = service["spec"].get("selector", {})
            if container is not None and _matches(selector, _pod_labels(deployment)):
                address = f"{service['metadata']['name']}:{_grpc_port(container)}"
                fronts[_service_of(container)] = address
    problems = []
    for doc in docs:
        for container in _containers(doc):
            environment = _environment(docs, container)
            for name in installed.SERVICES:
                value = environment.get(f"APPFORGE_{name.upper()}_ADDR")
                if value is not None and value != fronts.get(name):
                    problems.append(f"{_name(doc)}: {name} at {value}, not {fronts.get(name)}")
    return problems


def _waits_for_schema(docs: list[Doc], deployment: Doc, image: str) -> bool:
    """Whether the pod's first init container runs wait_for_schema.py in the server's image."""
    inits = deployment["spec"]["template"]["spec"].get("initContainers", [])
    if not inits or inits[0]["image"] != image:
        return False
    command = inits[0].get("command", [])
    if command[:1] != [PYTHON] or len(command) < 2:
        return False
    script = Path(command[1])
    volume = _volumes(deployment).get(_mounts(inits[0]).get(str(script.parent), ""), {})
    config = _find(docs, "ConfigMap", volume.get("configMap", {}).get("name", ""))
    return config is not None and "def why_not_ready" in _values(config).get(script.name, "")


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
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: a writable root filesystem")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: privilege escalation allowed")
    if context.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: keeps capabilities")
    if "/tmp" not in _mounts(container):
        problems.append(f"{where}: no writable /tmp")
    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        if set(resources.get(bound, {})) != {"cpu", "memory"}:
            problems.append(f"{where}: its {bound} are not cpu and memory")
    return problems


def security_problems(docs: list[Doc]) -> list[str]:
    """Run as the Dockerfile's non-root user, read-only but for volumes where the code writes
    (/tmp; the servers' APPFORGE_DATA_DIR), with bounded resources."""
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
        server = _server(doc)
        if server is not None and data_dir not in _mounts(server):
            problems.append(f"{_name(doc)}: {data_dir} (APPFORGE_DATA_DIR) is not a volume")
    return problems


def deploy_root_problems(docs: list[Doc]) -> list[str]:
    """The deployers' `local` target publishes to one volume every replica mounts."""
    problems: list[str] = []
    for deployment, container in _servers(docs, problems):
        if _service_of(container) != "deployer":
            continue
        root = _environment(docs, container).get("APPFORGE_DEPLOY_ROOT", "")
        volume = _volumes(deployment).get(_mounts(container).get(root, ""), {})
        claim = volume.get("persistentVolumeClaim", {}).get("claimName", "")
        found = _find(docs, "PersistentVolumeClaim", claim)
        if found is None or "ReadWriteMany" not in found["spec"]["accessModes"]:
            problems.append(f"{_name(deployment)}: APPFORGE_DEPLOY_ROOT={root!r} is not shared")
    return problems


def image_problems(docs: list[Doc]) -> list[str]:
    """A service's pods run its image, as kustomization.yaml's `images:` names it."""
    entries = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    images = {e["name"]: f"{e.get('newName', e['name'])}:{e['newTag']}" for e in entries}
    problems = []
    for doc in docs:
        service = _pod_labels(doc).get("app.kubernetes.io/name") if _pod_spec(doc) else None
        for container in _containers(doc):
            if container["image"] != images.get(f"appforge-{service}"):
                problems.append(f"{_name(doc)} {container['name']}: image {container['image']}")
    return problems


CHECKS: tuple[Check, ...] = (
    namespace_problems,
    reference_problems,
    unknown_variables,
    secret_problems,
    required_problems,
    probe_problems,
    file_problems,
    grace_problems,
    disruption_problems,
    connection_problems,
    metrics_problems,
    service_problems,
    address_problems,
    migration_problems,
    security_problems,
    deploy_root_problems,
    image_problems,
)


# --- the manifests pass ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_document_is_valid_kubernetes(variant: str, version: str) -> None:
    docs = built(variant)
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    }
    assert schema_problems(docs, version) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_manifests_hold(variant: str, check: Check) -> None:
    assert check(built(variant)) == []


def test_one_deployment_serves_each_service() -> None:
    docs = built("base")
    serving = [_service_of(c) for d in _of(docs, "Deployment") if (c := _server(d)) is not None]
    assert sorted(serving) == sorted(installed.SERVICES)


def test_the_tls_component_turns_tls_on_in_every_deployment() -> None:
    for deployment in _of(built("tls"), "Deployment"):
        container = _server(deployment)
        assert container is not None
        environment = _environment(built("tls"), container)
        assert environment["APPFORGE_TLS_CLIENT_CA_FILE"] == environment["APPFORGE_TLS_CA_FILE"]
        assert {"tls.pem", "tls.key", "ca.pem"} == {
            Path(environment[f"APPFORGE_TLS_{name}_FILE"]).name for name in ("CERT", "KEY", "CA")
        }
        assert _volumes(deployment)["tls"]["secret"]["secretName"] == "appforge-tls"


def test_the_variable_scan_finds_the_settings() -> None:
    """The subset check means something only if the scan finds what the code reads."""
    assert {
        "APPFORGE_SHUTDOWN_GRACE",
        "APPFORGE_METRICS_PORT",
        "APPFORGE_TLS_CERT_FILE",
        "APPFORGE_DEPLOY_ROOT",
        "APPFORGE_MODEL",
        "DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
    } <= variables_the_code_reads()


def _wait_for_schema() -> dict[str, Any]:
    """The init containers' script, loaded as a module."""
    config = _named(built("base"), "ConfigMap", "appforge-wait-for-schema")
    module: dict[str, Any] = {"__name__": "wait_for_schema"}
    exec(compile(_values(config)["wait_for_schema.py"], "wait_for_schema.py", "exec"), module)
    return module


async def test_wait_for_schema_waits_for_the_migrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() registers the environment's secrets: as they were, after the test.
    monkeypatch.setattr(secrets, "_secrets", secrets._secrets)
    script = _wait_for_schema()
    url = f"sqlite+aiosqlite:///{tmp_path / 'appforge.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    reason = await script["why_not_ready"](url)
    assert reason is not None and "run `appforge migrate`" in reason
    # No time left: one look, then exit 1 (the kubelet starts it again).
    assert await asyncio.to_thread(script["main"], ["wait_for_schema.py", "0"]) == 1

    engine = db.create_engine(url)
    try:
        await migrate.upgrade(engine, installed.installed_histories())
    finally:
        await engine.dispose()
    assert await script["why_not_ready"](url) is None
    assert await asyncio.to_thread(script["main"], ["wait_for_schema.py", "0"]) == 0


async def test_wait_for_schema_waits_for_a_database_not_there_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused connection is a reason to wait (PostgreSQL may still be starting), said
    without the URL's password."""
    monkeypatch.setattr(secrets, "_secrets", secrets._secrets)
    url = "postgresql+asyncpg://appforge:marker-pw-5a1f@127.0.0.1:9/appforge"
    secrets.register_env({"DATABASE_URL": url})
    reason = await _wait_for_schema()["why_not_ready"](url)
    assert reason is not None and "marker-pw-5a1f" not in reason


def test_this_kustomize_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(Unsupported, match="configMapGenerator"):
        build(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
@pytest.mark.parametrize("variant", VARIANTS)
def test_this_kustomize_agrees_with_kubectl_kustomize(variant: str, tmp_path: Path) -> None:
    overlay: Doc = {"resources": [os.path.relpath(K8S, tmp_path)]}
    if variant == "tls":
        overlay["components"] = [os.path.relpath(TLS, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = {_name(d): d for d in _documents(result.stdout)}
    assert theirs == {_name(d): d for d in built(variant)}


# --- and each check fails on manifests broken the way it guards against -------------------------

Where = tuple[str | int, ...]
POD = ("spec", "template", "spec")


def _put(node: Any, path: Where, value: Any) -> None:
    """Set `path` in `node` to `value`; None deletes it."""
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def _edit(kind: str, name: str, path: Where, value: Any) -> Callable[[list[Doc]], None]:
    return lambda docs: _put(_named(docs, kind, name), path, value)


def _edit_server(name: str, path: Where, value: Any) -> Callable[[list[Doc]], None]:
    """As `_edit`, in the service container of the Deployment `name`."""
    return lambda docs: _put(_server(_named(docs, "Deployment", name)), path, value)


def _add_env(name: str, variable: str, value: str) -> Callable[[list[Doc]], None]:
    def add(docs: list[Doc]) -> None:
        container = _server(_named(docs, "Deployment", name))
        assert container is not None
        container["env"].append({"name": variable, "value": value})

    return add


def _drop(kind: str, name: str) -> Callable[[list[Doc]], None]:
    return lambda docs: docs.remove(_named(docs, kind, name))


@dataclass(frozen=True)
class Breakage:
    """A mistake made in the manifests (of the variant), and the check that must report it."""

    check: Check
    apply: Callable[[list[Doc]], None]
    variant: str = "base"


CONFIG = ("ConfigMap", "appforge-config")
SECRET = ("Secret", "appforge-secrets")
NAME_LABEL = "app.kubernetes.io/name"
BREAKAGES = {
    "an unknown field": Breakage(schema_problems, _edit_server("chat", ("bogus",), 1)),
    "a string for a number": Breakage(
        schema_problems,
        _edit("HorizontalPodAutoscaler", "chat", ("spec", "minReplicas"), "2"),
        variant="tls",
    ),
    "more pods than PostgreSQL takes": Breakage(
        connection_problems, _edit("HorizontalPodAutoscaler", "chat", ("spec", "maxReplicas"), 20)
    ),
    "a pool size PostgreSQL cannot take": Breakage(
        connection_problems, _edit(*CONFIG, ("data", "APPFORGE_DB_POOL_SIZE"), "10")
    ),
    "a namespace": Breakage(
        namespace_problems, _edit("Service", "chat", ("metadata", "namespace"), "x")
    ),
    "a ConfigMap that is not there": Breakage(
        reference_problems,
        _edit_server("builder", ("envFrom", 0, "configMapRef", "name"), "appforge-cfg"),
    ),
    "a claim that is not there": Breakage(
        reference_problems, _drop("PersistentVolumeClaim", "deployer-deploys")
    ),
    "an unknown env variable": Breakage(
        unknown_variables, _add_env("chat", "APPFORGE_NOT_A_SETTING", "1")
    ),
    "an unknown ConfigMap key": Breakage(
        unknown_variables, _edit(*CONFIG, ("data", "APPFORGE_CHAT_ADDRESS"), "x")
    ),
    "an unknown Secret key": Breakage(
        unknown_variables, _edit(*SECRET, ("stringData", "OPENAI_KEY"), "")
    ),
    "a secret in the ConfigMap": Breakage(
        secret_problems, _edit(*CONFIG, ("data", "REDIS_URL"), "redis://r:6379/0")
    ),
    "a secret as a literal": Breakage(
        secret_problems, _add_env("builder", "OPENAI_API_KEY", "sk-live")
    ),
    "a real value in the Secret": Breakage(
        secret_problems,
        _edit(*SECRET, ("stringData", "DATABASE_URL"), "postgresql+asyncpg://u:pw@db/a"),
    ),
    "no envFrom": Breakage(required_problems, _edit_server("deployer", ("envFrom",), [])),
    "no REDIS_URL": Breakage(required_problems, _edit(*SECRET, ("stringData", "REDIS_URL"), None)),
    "no signing secret": Breakage(
        required_problems, _edit(*SECRET, ("stringData", "APPFORGE_AUTH_JWT_SECRET"), None)
    ),
    "readiness on another port": Breakage(
        probe_problems, _edit_server("chat", ("readinessProbe", "grpc", "port"), 50052)
    ),
    "no liveness probe": Breakage(
        probe_problems, _edit_server("builder", ("livenessProbe",), None)
    ),
    "serving on another port": Breakage(
        probe_problems, _edit_server("deployer", ("args", 5), "50063")
    ),
    "another container port": Breakage(
        probe_problems, _edit_server("chat", ("ports", 0, "containerPort"), 50061)
    ),
    "native probes with TLS on": Breakage(
        probe_problems, _add_env("chat", "APPFORGE_TLS_CERT_FILE", "/data/tls.pem")
    ),
    "a TLS probe that checks nothing": Breakage(
        probe_problems,
        _edit_server("builder", ("readinessProbe", "exec", "command"), ["true"]),
        variant="tls",
    ),
    "a TLS probe on another port": Breakage(
        probe_problems,
        _edit_server(
            "chat", ("livenessProbe", "exec", "command"), [APPFORGE, "health", "127.0.0.1:50052"]
        ),
        variant="tls",
    ),
    "TLS files not mounted": Breakage(
        file_problems, _edit_server("deployer", ("volumeMounts",), []), variant="tls"
    ),
    "a grace just equal": Breakage(
        grace_problems, _edit("Deployment", "chat", (*POD, "terminationGracePeriodSeconds"), 25)
    ),
    "a longer APPFORGE_SHUTDOWN_GRACE": Breakage(
        grace_problems, _edit(*CONFIG, ("data", "APPFORGE_SHUTDOWN_GRACE"), "30"), variant="tls"
    ),
    "a longer preStop": Breakage(
        grace_problems,
        _edit_server("deployer", ("lifecycle", "preStop", "exec", "command", 1), "10"),
    ),
    "a budget for other pods": Breakage(
        disruption_problems,
        _edit("PodDisruptionBudget", "chat", ("spec", "selector", "matchLabels", NAME_LABEL), "x"),
    ),
    "no budget": Breakage(disruption_problems, _drop("PodDisruptionBudget", "deployer")),
    "a budget that lets both go": Breakage(
        disruption_problems, _edit("PodDisruptionBudget", "builder", ("spec", "maxUnavailable"), 2)
    ),
    "no autoscaler": Breakage(disruption_problems, _drop("HorizontalPodAutoscaler", "builder")),
    "an autoscaler of another target": Breakage(
        disruption_problems,
        _edit("HorizontalPodAutoscaler", "chat", ("spec", "scaleTargetRef", "name"), "cht"),
    ),
    "an autoscaler down to one": Breakage(
        disruption_problems, _edit("HorizontalPodAutoscaler", "chat", ("spec", "minReplicas"), 1)
    ),
    "an autoscaler on memory": Breakage(
        disruption_problems,
        _edit(
            "HorizontalPodAutoscaler",
            "deployer",
            ("spec", "metrics", 0, "resource", "name"),
            "memory",
        ),
    ),
    "replicas set": Breakage(
        disruption_problems, _edit("Deployment", "deployer", ("spec", "replicas"), 3)
    ),
    "annotated with another port": Breakage(
        metrics_problems,
        _edit(
            "Deployment",
            "chat",
            ("spec", "template", "metadata", "annotations", "prometheus.io/port"),
            "9999",
        ),
    ),
    "metrics moved by env": Breakage(
        metrics_problems, _edit_server("builder", ("env", 0, "value"), "9062")
    ),
    "not annotated": Breakage(
        metrics_problems,
        _edit("Deployment", "deployer", ("spec", "template", "metadata", "annotations"), None),
    ),
    "a Service selecting the Job": Breakage(
        service_problems,
        _edit("Service", "chat", ("spec", "selector", "app.kubernetes.io/component"), "migration"),
    ),
    "a Service selecting every pod of a service": Breakage(
        service_problems,
        _edit("Service", "chat", ("spec", "selector", "app.kubernetes.io/component"), None),
    ),
    "a Service without the http port": Breakage(
        service_problems, _edit("Service", "deployer", ("spec", "ports", 1), None)
    ),
    "a misspelt targetPort": Breakage(
        service_problems, _edit("Service", "builder", ("spec", "ports", 0, "targetPort"), "grcp")
    ),
    "no appProtocol": Breakage(
        service_problems, _edit("Service", "chat", ("spec", "ports", 0, "appProtocol"), None)
    ),
    "an address on the wrong port": Breakage(
        address_problems, _edit(*CONFIG, ("data", "APPFORGE_CHAT_ADDR"), "chat:50052")
    ),
    "an address of another Service": Breakage(
        address_problems,
        _edit(*CONFIG, ("data", "APPFORGE_DEPLOYER_ADDR"), "appforge-deployer:50053"),
        variant="tls",
    ),
    "no wait for the schema": Breakage(
        migration_problems, _edit("Deployment", "builder", (*POD, "initContainers"), None)
    ),
    "a wait for another script": Breakage(
        migration_problems,
        _edit(
            "Deployment",
            "chat",
            (*POD, "initContainers", 0, "command", 1),
            "/etc/appforge/wait-for-schema/other.py",
        ),
    ),
    "no migration Job": Breakage(migration_problems, _drop("Job", "migrate-chat")),
    "a Job migrating another image": Breakage(
        migration_problems,
        _edit("Job", "migrate-deployer", (*POD, "containers", 0, "image"), "appforge-chat:0.1.0"),
    ),
    "a writable root": Breakage(
        security_problems,
        _edit(
            "Job",
            "migrate-builder",
            (*POD, "containers", 0, "securityContext", "readOnlyRootFilesystem"),
            False,
        ),
    ),
    "root": Breakage(
        security_problems, _edit("Deployment", "chat", (*POD, "securityContext", "runAsUser"), 0)
    ),
    "no /tmp": Breakage(security_problems, _edit_server("builder", ("volumeMounts", 1), None)),
    "no data volume": Breakage(security_problems, _edit_server("chat", ("volumeMounts", 0), None)),
    "no limits": Breakage(
        security_problems, _edit_server("deployer", ("resources", "limits"), None)
    ),
    "a deploy root on one pod's disk": Breakage(
        deploy_root_problems,
        _edit(
            "PersistentVolumeClaim", "deployer-deploys", ("spec", "accessModes"), ["ReadWriteOnce"]
        ),
    ),
    "a deploy root not mounted": Breakage(
        deploy_root_problems, _edit_server("deployer", ("env", 1, "value"), "/srv/apps")
    ),
    "a misspelt image": Breakage(
        image_problems,
        _edit("Deployment", "chat", (*POD, "initContainers", 0, "image"), "appforge-chatt:0.1.0"),
    ),
    "another service's image": Breakage(
        image_problems,
        _edit_server("builder", ("image",), "appforge-deployer:0.1.0"),
        variant="tls",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_each_check_catches_a_broken_manifest(breakage: Breakage) -> None:
    docs = built(breakage.variant)
    breakage.apply(docs)
    assert breakage.check(docs) != []


def test_every_check_is_shown_to_catch_something() -> None:
    assert {b.check for b in BREAKAGES.values()} == {schema_problems, *CHECKS}
