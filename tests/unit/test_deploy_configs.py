"""The sample configs, deploy files and README stay true to the code.

The samples in deploy/examples are parsed with the real typed config classes and
must list every key with its default. The README's command-line section may name
only commands that exist, and must name all of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from aggregator.config import AggregatorConfig
from aggregator.probes import parse_listen
from blindsum.bundle import PartyConfig
from blindsum.config import load_config, parse_config
from blindsum.errors import ConfigError
from blindsum.schema import Schema, load_metrics_file
from blindsum_app.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = DEPLOY / "examples"
README = ROOT / "README.md"

SAMPLES: list[tuple[str, type[Any]]] = [
    ("aggregator.toml", AggregatorConfig),
    ("party.toml", PartyConfig),
]


# -- sample configs --------------------------------------------------------------


def test_sample_aggregator_config_is_the_default_config() -> None:
    cfg = load_config(EXAMPLES / "aggregator.toml", AggregatorConfig)
    assert cfg == AggregatorConfig()


def test_sample_party_config_uses_the_defaults() -> None:
    cfg = load_config(EXAMPLES / "party.toml", PartyConfig)
    assert cfg == PartyConfig(name="team-a", aggregator="127.0.0.1:7443")


def _field_tree(cls: type[Any]) -> dict[str, Any]:
    """Field names of a config dataclass; nested dataclasses become sub-dicts."""
    hints = typing.get_type_hints(cls)
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        is_section = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        tree[f.name] = _field_tree(tp) if is_section else None
    return tree


def _key_tree(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _key_tree(v) if isinstance(v, dict) else None for k, v in data.items()}


@pytest.mark.parametrize(("name", "cls"), SAMPLES)
def test_sample_lists_every_key(name: str, cls: type[Any]) -> None:
    data = tomllib.loads((EXAMPLES / name).read_text())
    assert _key_tree(data) == _field_tree(cls)


@pytest.mark.parametrize(
    ("name", "cls", "anchor", "injected", "dotted"),
    [
        ("aggregator.toml", AggregatorConfig, "", "lisen = 1\n", "lisen"),
        ("aggregator.toml", AggregatorConfig, "[server]\n", "listn = 'x'\n", "server.listn"),
        (
            "aggregator.toml",
            AggregatorConfig,
            "[custodian]\n",
            "embeded = true\n",
            "custodian.embeded",
        ),
        ("party.toml", PartyConfig, "", "agregator = 'x'\n", "agregator"),
    ],
)
def test_unknown_key_in_a_copy_is_rejected(
    tmp_path: Path, name: str, cls: type[Any], anchor: str, injected: str, dotted: str
) -> None:
    text = (EXAMPLES / name).read_text()
    if anchor:
        assert anchor in text
        text = text.replace(anchor, anchor + injected, 1)
    else:
        text = injected + text
    copy = tmp_path / name
    copy.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(copy, cls)
    assert f"unknown key {dotted}" in excinfo.value.message
    assert name in excinfo.value.message


# -- deploy files ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted((EXAMPLES / "metrics").iterdir()), ids=lambda p: Path(p).name
)
def test_sample_metrics_files_encode_with_the_default_schema(path: Path) -> None:
    schema = Schema.default()
    vector = load_metrics_file(path, schema)
    assert vector.dtype == np.uint64
    assert vector.shape == (schema.vector_length,)
    contributing = [int(vector[schema.contributor_index(r)]) for r in schema.regions]
    assert set(contributing) <= {0, 1}
    assert sum(contributing) >= 1


def test_deploy_directory_holds_no_private_key() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.suffix not in {".key", ".pem", ".p12"}, path
        text = path.read_text(errors="replace")
        assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text), path


# -- Kubernetes manifests ----------------------------------------------------------

K8S = DEPLOY / "k8s"


def _manifest(name: str) -> list[dict[str, Any]]:
    # PyYAML comes with presidio-analyzer (a runtime dependency); it has no stubs.
    yaml: Any = pytest.importorskip("yaml", reason="PyYAML parses the Kubernetes manifests")
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], (name, doc)
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, (kind, [d["kind"] for d in docs])
    return found[0]


def _aggregator_config(docs: list[dict[str, Any]]) -> AggregatorConfig:
    """The ConfigMap's aggregator.toml, parsed by the real config class."""
    text = _one(docs, "ConfigMap")["data"]["aggregator.toml"]
    return parse_config(tomllib.loads(text), AggregatorConfig, source="aggregator.toml")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container["ports"]}


@pytest.mark.parametrize("name", sorted(p.name for p in K8S.glob("*.yaml")))
def test_every_manifest_parses_and_holds_no_secret(name: str) -> None:
    docs = _manifest(name)
    assert docs
    # Secrets are created with kubectl from files kept out of the repository.
    assert not [d for d in docs if d["kind"] == "Secret"]
    text = (K8S / name).read_text()
    assert "PRIVATE KEY" not in text
    assert "BEGIN CERTIFICATE" not in text


@pytest.mark.parametrize("name", ["aggregator.yaml", "aggregator-single.yaml"])
def test_aggregator_probes_use_the_plain_http_metrics_port(name: str) -> None:
    docs = _manifest(name)
    cfg = _aggregator_config(docs)
    address = parse_listen(cfg.metrics.listen)
    assert address is not None, "the probes need [metrics] listen"
    # The kubelet dials the pod IP, not the pod's loopback.
    assert address[0] == "0.0.0.0"
    container = _container(_one(docs, "Deployment"))
    assert _ports(container)["metrics"] == address[1]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The probes' port is not published: the Service carries gRPC only.
    service_ports = _one(docs, "Service")["spec"]["ports"]
    assert [p["targetPort"] for p in service_ports] == ["grpc"]
    assert _ports(container)["grpc"] == int(cfg.server.listen.rsplit(":", 1)[1])


def test_the_replicated_aggregator_runs_three_replicas_on_postgres() -> None:
    docs = _manifest("aggregator.yaml")
    cfg = _aggregator_config(docs)
    assert cfg.store.url.startswith("postgresql://")
    # No password in the URL: PGPASSWORD comes from a Secret.
    assert urlsplit(cfg.store.url).password is None
    # No custodian: he rounds are not served by several replicas.
    assert not cfg.custodian.embedded and cfg.custodian.address == ""
    assert cfg.tls.ca_key == ""

    deployment = _one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    spread = pod.get("topologySpreadConstraints", [])
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread) or pod.get(
        "affinity", {}
    ).get("podAntiAffinity")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]

    # The TLS material comes from a Secret mounted where the config looks for it.
    container = _container(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secret_dirs = [path for path, vol in mounts.items() if "secret" in volumes[vol]]
    assert secret_dirs
    for value in (cfg.tls.ca_cert, cfg.tls.cert, cfg.tls.key):
        assert any(f"/data/aggregator/{value}".startswith(d + "/") for d in secret_dirs), value
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]

    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = pdb["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) >= 2


def test_the_single_aggregator_runs_one_replica_on_sqlite() -> None:
    docs = _manifest("aggregator-single.yaml")
    cfg = _aggregator_config(docs)
    assert cfg.store.url.startswith("sqlite:///")
    spec = _one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert _one(docs, "PersistentVolumeClaim")


def test_the_weekly_round_admin_config_parses() -> None:
    cfg = _aggregator_config(_manifest("weekly-round.yaml"))
    assert cfg.server.listen == "blindsum-aggregator:7443"


# -- README ----------------------------------------------------------------------


def _readme() -> str:
    return README.read_text()


def test_readme_gives_the_two_make_commands() -> None:
    text = _readme()
    assert "make demo" in text
    assert "make test" in text


def _cli_section(text: str) -> str:
    match = re.search(r"^## Command line\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README has no '## Command line' section"
    return match.group(1)


def _code_lines(section: str) -> list[str]:
    """Lines inside fenced code blocks, plus every inline code span."""
    lines: list[str] = []
    fenced = False
    for line in section.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
        else:
            lines += re.findall(r"`([^`]+)`", line)
    return lines


_INVOCATION = re.compile(r"(?<![\w/.-])blindsum[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")


def _mentioned(section: str) -> set[tuple[str, str | None]]:
    found: set[tuple[str, str | None]] = set()
    for line in _code_lines(section):
        for match in _INVOCATION.finditer(line):
            found.add((match.group(1), match.group(2)))
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parser_commands() -> dict[str, set[str]]:
    """Top-level command -> its subcommands (empty for a command without any)."""
    return {name: set(_subcommands(sub)) for name, sub in _subcommands(build_parser()).items()}


def test_every_command_in_the_readme_cli_section_exists() -> None:
    commands = _parser_commands()
    mentioned = _mentioned(_cli_section(_readme()))
    assert mentioned
    for group, cmd in sorted(mentioned, key=str):
        assert group in commands, f"README names `blindsum {group}`, which does not exist"
        if commands[group]:
            assert cmd in commands[group], f"README names `blindsum {group} {cmd}`"


def test_the_readme_cli_section_names_every_command() -> None:
    commands = _parser_commands()
    named: set[tuple[str, str | None]] = {(g, c) for g, subs in commands.items() for c in subs}
    named |= {(g, None) for g, subs in commands.items() if not subs}
    documented = {
        (g, c if commands.get(g) else None) for g, c in _mentioned(_cli_section(_readme()))
    }
    assert ("aggregator", "open-round") in named
    assert ("demo", None) in named
    assert named <= documented, sorted(named - documented, key=str)


# -- deploy/k8s and deploy/compose.yaml against their schemas (issue 13, item 8) ------


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    import yaml

    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


@pytest.mark.parametrize(
    ("where", "doc"), _k8s_documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_kubernetes_manifest_validates_against_the_api_schemas(
    where: str, doc: dict[str, Any]
) -> None:
    """kubernetes-validate (the schemas of the Kubernetes API, offline) in strict mode:
    an unknown or misspelt field fails, not only a wrong type."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    kv.validate(doc, kv.latest_version(), strict=True)


def test_the_manifests_keep_the_metrics_port_to_prometheus() -> None:
    policies = [d for _, d in _k8s_documents() if d["kind"] == "NetworkPolicy"]
    assert policies, "deploy/k8s ships no NetworkPolicy"
    rules = policies[0]["spec"]["ingress"]
    open_ports = {p["port"] for r in rules if "from" not in r for p in r["ports"]}
    assert open_ports == {7443}  # the probe and metrics port is not open to everyone
    assert any(p["port"] == 9464 for r in rules if "from" in r for p in r["ports"])


def test_the_compose_file_is_well_formed() -> None:
    """The compose file's structure, checked offline: every service has an image,
    every named volume it mounts is declared, every dependency is a service, ports are
    HOST_IP:HOST:CONTAINER on loopback, and the files it mounts exist."""
    import yaml

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    assert {"init", "aggregator"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), name
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in volumes, f"{name}: undeclared volume {source}"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name}: depends on unknown {dep}"
        for port in svc.get("ports", []):
            host_ip, host, container = str(port).split(":")
            assert host_ip == "127.0.0.1" and host.isdigit() and container.isdigit(), port


def test_the_image_copies_every_package_the_project_installs() -> None:
    """Found while documenting the party deployment: the Dockerfile did not copy
    blindsum_app, so the image's `blindsum` command could not import its CLI."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile, flags=re.MULTILINE))
    assert packages <= copied, sorted(packages - copied)
