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
from validate_cluster import KubeRayError, validate_cluster_yaml, validate_file, validate_kuberay  # noqa: E402


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
    assert "chmod 600 ~/.ray/auth_token" in setup  # the distributed token is readable by its owner only


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


@pytest.mark.parametrize("name", ["rayjob.yaml", "rayservice.yaml", "networkpolicy.yaml"])
def test_kuberay_manifests_validate(name):
    validate_file(REPO / "deploy" / "kuberay" / name)


def test_kuberay_clusters_use_token_auth_and_a_reachable_dashboard():
    for name, key in (("rayjob.yaml", "rayClusterSpec"), ("rayservice.yaml", "rayClusterConfig")):
        spec = yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())["spec"][key]
        assert spec["authOptions"]["mode"] == "token"
        assert "dashboard-host" not in spec["headGroupSpec"]["rayStartParams"]  # the operator needs :8265


def _head(m: dict) -> dict:
    return m["spec"].get("rayClusterSpec", m["spec"].get("rayClusterConfig"))["headGroupSpec"]


@pytest.mark.parametrize("name", ["rayjob.yaml", "rayservice.yaml"])
def test_a_loopback_dashboard_or_an_optional_secret_fails(name):
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / name).read_text())
    broken = copy.deepcopy(manifest)
    _head(broken)["rayStartParams"]["dashboard-host"] = "127.0.0.1"
    with pytest.raises(KubeRayError, match="hides the dashboard from the KubeRay operator"):
        validate_kuberay(broken)
    broken = copy.deepcopy(manifest)
    _head(broken)["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["optional"] = True
    with pytest.raises(KubeRayError, match="without its API key"):
        validate_kuberay(broken)


def test_a_pipeline_rayjob_that_deploys_on_its_doomed_cluster_fails():
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay" / "rayjob.yaml").read_text())
    manifest["spec"]["entrypoint"] = "python jobs/pipeline.py --config configs/gpu-multinode.yaml"
    with pytest.raises(KubeRayError, match="shutdownAfterJobFinishes deletes"):
        validate_kuberay(manifest)


def test_a_wrong_port_forward_service_name_fails(tmp_path):
    text = (REPO / "deploy" / "kuberay" / "rayservice.yaml").read_text()
    broken = tmp_path / "rayservice.yaml"
    broken.write_text(text.replace("svc/synthembed-serve-serve-svc", "svc/synthembed-serve-svc"))
    with pytest.raises(KubeRayError, match="KubeRay names this RayService's services"):
        validate_file(broken)


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
