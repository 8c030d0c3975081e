"""Validate the cluster definitions before anyone pays for machines.

`cluster.yaml` is checked by Ray's own code: the launcher fills in provider defaults and validates
against `ray/autoscaler/ray-schema.json` shipped in the ray package. KubeRay's CRD schemas do not ship
with any Python package, so the KubeRay manifests are checked here for the fields KubeRay v1.x requires
(and whose absence it reports only after the operator has accepted the object), and a RayService's
embedded Serve config is validated with Ray Serve's own schema.

    python deploy/validate_cluster.py cluster.yaml deploy/kuberay/*.yaml

Deploy tooling, not library code: nothing in `synthembed` imports it.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import yaml

KUBERAY_API = "ray.io/v1"
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubeRayError(ValueError):
    """A KubeRay manifest is missing or mis-types a field; the message gives its path."""


def validate_cluster_yaml(config: dict) -> dict:
    """Fill defaults and validate like `ray up` does; returns the prepared config or raises."""
    import json

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    # The schema first, on the file as written: prepare_config assumes required keys exist and would
    # fail on a missing `provider` with a bare KeyError instead of a schema message.
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _require(node: dict, key: str, path: str, kind: type | tuple = object):
    if not isinstance(node, dict) or key not in node or node[key] in (None, "", [], {}):
        raise KubeRayError(f"{path}.{key} is required")
    if not isinstance(node[key], kind):
        raise KubeRayError(f"{path}.{key} must be {getattr(kind, '__name__', kind)}, got {type(node[key]).__name__}")
    return node[key]


def _check_pod_template(template: dict, path: str) -> None:
    containers = _require(_require(template, "spec", path, dict), "containers", f"{path}.spec", list)
    for i, container in enumerate(containers):
        _require(container, "name", f"{path}.spec.containers[{i}]", str)
        _require(container, "image", f"{path}.spec.containers[{i}]", str)


def _check_start_params(params: dict, path: str) -> None:
    if not isinstance(params, dict):
        raise KubeRayError(f"{path}.rayStartParams must be a mapping (it may be empty: {{}})")
    for key, value in params.items():
        if not isinstance(value, str):  # map[string]string in the CRD
            raise KubeRayError(f"{path}.rayStartParams.{key} must be a string (quote it), got {value!r}")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_head_params(params: dict, path: str) -> None:
    host = params.get("dashboard-host")
    if host in LOOPBACK:
        raise KubeRayError(
            f"{path}.rayStartParams.dashboard-host: {host} hides the dashboard from the KubeRay operator, which "
            "reaches it through the head service on :8265 (the RayJob is never submitted, the RayService never "
            "gets its Serve config, yet the pods turn Ready); remove it and restrict :8265 with a NetworkPolicy "
            "(deploy/kuberay/networkpolicy.yaml) and token auth")


def _check_secrets_required(template: dict, path: str) -> None:
    for i, container in enumerate(template.get("spec", {}).get("containers", [])):
        for j, source in enumerate(container.get("envFrom", [])):
            ref = source.get("secretRef")
            if ref and ref.get("optional"):
                raise KubeRayError(
                    f"{path}.spec.containers[{i}].envFrom[{j}].secretRef.optional: true lets the pods start "
                    f"without Secret {ref.get('name')!r}, and the service then runs without its API key; drop "
                    "`optional` so a missing Secret stops the pod")


def _check_ray_cluster_spec(spec: dict, path: str) -> None:
    if "rayVersion" in spec and not isinstance(spec["rayVersion"], str):
        raise KubeRayError(f"{path}.rayVersion must be a quoted string such as \"2.60.0\"")
    auth = spec.get("authOptions", {})
    if auth and auth.get("mode") not in ("disabled", "token"):
        raise KubeRayError(f"{path}.authOptions.mode must be 'token' or 'disabled'")
    head = _require(spec, "headGroupSpec", path, dict)
    _check_start_params(head.get("rayStartParams", {}), f"{path}.headGroupSpec")
    _check_head_params(head.get("rayStartParams", {}), f"{path}.headGroupSpec")
    _check_pod_template(_require(head, "template", f"{path}.headGroupSpec", dict), f"{path}.headGroupSpec.template")
    _check_secrets_required(head["template"], f"{path}.headGroupSpec.template")
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        gpath = f"{path}.workerGroupSpecs[{i}]"
        _require(group, "groupName", gpath, str)
        _check_start_params(group.get("rayStartParams", {}), gpath)
        _check_pod_template(_require(group, "template", gpath, dict), f"{gpath}.template")
        _check_secrets_required(group["template"], f"{gpath}.template")
        lo, n, hi = (group.get(k) for k in ("minReplicas", "replicas", "maxReplicas"))
        for key, value in (("minReplicas", lo), ("replicas", n), ("maxReplicas", hi)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise KubeRayError(f"{gpath}.{key} must be a non-negative integer")
        if lo is not None and hi is not None and not (lo <= (n if n is not None else lo) <= hi):
            raise KubeRayError(f"{gpath}: need minReplicas <= replicas <= maxReplicas")


def _check_serve_config(text: str, path: str) -> None:
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError, TypeError) as err:
        raise KubeRayError(f"{path}: not a valid Ray Serve config: {err}") from None


def validate_kuberay(manifest: dict) -> None:
    """Check a RayJob / RayService / RayCluster manifest; raise KubeRayError naming the field."""
    if manifest.get("apiVersion") != KUBERAY_API:
        raise KubeRayError(f"apiVersion must be {KUBERAY_API}, got {manifest.get('apiVersion')!r}")
    kind = manifest.get("kind")
    name = _require(manifest, "metadata", "", dict).get("name", "")
    if not DNS_1123.match(name or ""):
        raise KubeRayError(f"metadata.name must be a DNS-1123 label (lower case, digits, '-'), got {name!r}")
    spec = _require(manifest, "spec", "", dict)
    if kind == "RayJob":
        _require(spec, "entrypoint", "spec", str)
        if ("rayClusterSpec" in spec) == ("clusterSelector" in spec):
            raise KubeRayError("spec: set exactly one of rayClusterSpec (new cluster) or clusterSelector (reuse one)")
        if "runtimeEnvYAML" in spec and not isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict):
            raise KubeRayError("spec.runtimeEnvYAML must be a YAML mapping given as a string")
        if spec.get("submissionMode", "K8sJobMode") not in SUBMISSION_MODES:
            raise KubeRayError(f"spec.submissionMode must be one of {sorted(SUBMISSION_MODES)}")
        if "rayClusterSpec" in spec:
            _check_ray_cluster_spec(spec["rayClusterSpec"], "spec.rayClusterSpec")
        pipeline = "jobs/pipeline.py" in spec["entrypoint"] or "synthembed pipeline" in spec["entrypoint"]
        if pipeline and spec.get("shutdownAfterJobFinishes") and "deploy" in _pipeline_stages(spec["entrypoint"]):
            raise KubeRayError(
                "spec.entrypoint: the pipeline's deploy stage would serve on a cluster that "
                "shutdownAfterJobFinishes deletes when the job ends; add --set stages=[generate,train,evaluate] "
                "and serve with a RayService (deploy/kuberay/rayservice.yaml)")
    elif kind == "RayService":
        _check_serve_config(_require(spec, "serveConfigV2", "spec", str), "spec.serveConfigV2")
        _check_ray_cluster_spec(_require(spec, "rayClusterConfig", "spec", dict), "spec.rayClusterConfig")
    elif kind == "RayCluster":
        _check_ray_cluster_spec(spec, "spec")
    else:
        raise KubeRayError(f"kind must be RayJob, RayService or RayCluster, got {kind!r}")


def _pipeline_stages(entrypoint: str) -> list[str]:
    found = re.search(r"stages=\[([^\]]*)\]", entrypoint)
    return [s.strip() for s in found.group(1).split(",")] if found else ["generate", "train", "evaluate", "deploy"]


def check_port_forward_names(text: str, manifest: dict) -> None:
    """The `kubectl port-forward svc/...` lines in a manifest's comments name services KubeRay creates."""
    name = manifest["metadata"]["name"]
    expected = {"RayService": {f"{name}-serve-svc", f"{name}-head-svc"}, "RayCluster": {f"{name}-head-svc"}}
    for svc in re.findall(r"port-forward\s+(?:svc|service)/([\w.-]+)", text):
        if manifest["kind"] in expected and svc not in expected[manifest["kind"]]:
            raise KubeRayError(f"port-forward svc/{svc}: KubeRay names this {manifest['kind']}'s services "
                               f"{sorted(expected[manifest['kind']])}")


def validate_network_policy(manifest: dict) -> None:
    spec = _require(manifest, "spec", "", dict)
    _require(spec, "podSelector", "spec", dict)
    if "Ingress" not in spec.get("policyTypes", []):
        raise KubeRayError("spec.policyTypes must include Ingress")
    ports = {p.get("port") for rule in spec.get("ingress", []) for p in rule.get("ports", [])}
    if 8265 not in ports:
        raise KubeRayError("spec.ingress: no rule for the dashboard port 8265 (the KubeRay operator needs it)")


def validate_file(path: Path) -> str:
    text = path.read_text()
    data = yaml.safe_load(text)
    if isinstance(data, dict) and data.get("kind") == "NetworkPolicy":
        validate_network_policy(data)
        return f"{path}: valid NetworkPolicy"
    if isinstance(data, dict) and data.get("apiVersion", "").startswith("ray.io/"):
        validate_kuberay(data)
        check_port_forward_names(text, data)
        return f"{path}: valid {data['kind']}"
    validate_cluster_yaml(data)
    return f"{path}: valid Ray cluster launcher config"


def main(argv: list[str]) -> int:
    status = 0
    for name in argv or ["cluster.yaml"]:
        try:
            print(validate_file(Path(name)))
        except Exception as err:  # report every file, then fail
            print(f"{name}: INVALID: {type(err).__name__}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
