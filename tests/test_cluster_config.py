"""Both cluster definitions validate: cluster.yaml against the schema inside the ray package, the
KubeRay manifests against the fields KubeRay requires; broken copies fail."""

from __future__ import annotations

import copy
import sys

import jsonschema
import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "deploy"))  # deploy tooling, not part of the library
from validate_cluster import KubeRayError, validate_cluster_yaml, validate_kuberay  # noqa: E402


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    config = validate_cluster_yaml(_cluster())
    assert set(config["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}


def test_cluster_yaml_is_locked_down():
    config = _cluster()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in cmd
    assert "~/.ray/auth_token" in config["file_mounts"]  # the same token on every node
    assert not any("API_KEY" in line for line in (REPO / "cluster.yaml").read_text().splitlines() if not line.lstrip().startswith("#"))
    setup = " ".join(config["setup_commands"])
    assert "torch==2.13.0" in setup


@pytest.mark.parametrize(
    "breakage, error",
    [
        (lambda c: c.update(max_workers="ten"), jsonschema.ValidationError),
        (lambda c: c.update(setup_comands=["echo typo"]), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="gpu_head"), ValueError),
        (lambda c: c.pop("provider"), jsonschema.ValidationError),
    ],
)
def test_broken_cluster_yaml_fails(breakage, error):
    config = copy.deepcopy(_cluster())
    breakage(config)
    with pytest.raises(error):
        validate_cluster_yaml(config)


@pytest.mark.parametrize("name", ["rayjob.yaml", "rayservice.yaml"])
def test_kuberay_manifests_validate(name):
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())
    validate_kuberay(manifest)


def test_kuberay_clusters_use_token_auth_and_loopback_dashboard():
    for name, key in (("rayjob.yaml", "rayClusterSpec"), ("rayservice.yaml", "rayClusterConfig")):
        spec = yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())["spec"][key]
        assert spec["authOptions"]["mode"] == "token"
        assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


@pytest.mark.parametrize(
    "name, breakage, message",
    [
        ("rayjob.yaml", lambda m: m["spec"].pop("entrypoint"), "spec.entrypoint"),
        ("rayjob.yaml", lambda m: m.update(apiVersion="ray.io/v1alpha0"), "apiVersion"),
        ("rayjob.yaml", lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
        ("rayjob.yaml", lambda m: m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"].update(containers=[]), "containers"),
        ("rayservice.yaml", lambda m: m["spec"].update(serveConfigV2="applications: [{name: x}]"), "serveConfigV2"),
        ("rayservice.yaml", lambda m: m["spec"].pop("rayClusterConfig"), "rayClusterConfig"),
    ],
)
def test_broken_kuberay_manifest_fails(name, breakage, message):
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())
    breakage(manifest)
    with pytest.raises(KubeRayError, match=message):
        validate_kuberay(manifest)
