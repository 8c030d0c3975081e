"""Serving: an OpenAI-compatible `/v1/embeddings` on Ray Serve for any model `synthembed.model` loads.

    from synthembed.serve import ServeConfig, deploy
    url = deploy(ServeConfig(model={"source": "runs/demo/merged"}))   # -> "http://127.0.0.1:8000"

The Ray-facing parts (deployment, FastAPI ingress) live in `synthembed.serve.app`, imported lazily so that
the schemas and helpers can be used without Ray Serve installed.
"""

from synthembed.serve.config import BatchingConfig, DeploymentConfig, LimitsConfig, ServeConfig

__all__ = ["ServeConfig", "LimitsConfig", "BatchingConfig", "DeploymentConfig", "deploy", "build_app", "app_builder"]


def __getattr__(name):
    if name in ("deploy", "build_app", "app_builder", "shutdown"):
        from synthembed.serve import app

        return getattr(app, name)
    raise AttributeError(name)
