"""Helpers for the serving tests: deploy a real Serve app on the shared `ray_cluster` and talk HTTP to it."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when ray is imported; the shared fixture sets it too late

import requests

from synthembed.serve import ServeConfig


def deploy_app(name: str, overrides: dict, api_key: str | None = None) -> tuple[str, ServeConfig]:
    """Deploy `name` at route /<name> on 127.0.0.1:8000 and return (base url, config)."""
    from synthembed.serve import deploy

    env = f"SYNTHEMBED_TEST_KEY_{name.upper().replace('-', '_')}"
    cfg = ServeConfig.model_validate({"app_name": name, "route_prefix": f"/{name}", "api_key_env": env, **overrides})
    if api_key:
        os.environ[env] = api_key
    try:
        url = deploy(cfg)
    finally:
        os.environ.pop(env, None)  # hashed into the deployment; the key itself is not kept around
    return url, cfg


def post(url: str, payload=None, key: str | None = None, data: bytes | None = None, timeout: float = 60):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
        return requests.post(url + "/v1/embeddings", data=data, headers=headers, timeout=timeout)
    return requests.post(url + "/v1/embeddings", json=payload, headers=headers, timeout=timeout)
