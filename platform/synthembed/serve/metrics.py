"""Prometheus metrics through `ray.util.metrics` (exported by every Ray node's metrics agent).

Serve's own `ray_serve_*` series already count HTTP requests, errors and latency per deployment; these add
what only the embedding code knows: tokens, truncations, batch shapes and forward-pass time.
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
TOKEN_BOUNDS = [16, 64, 256, 1024, 4096, 16384, 65536]
ITEM_BOUNDS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class ServeMetrics:
    def __init__(self, model: str):
        tags = ("model",)
        self.default_tags = {"model": model}
        self.requests = metrics.Counter(
            "synthembed_requests", "embedding requests by HTTP status", tag_keys=("model", "status"))
        self.inputs = metrics.Counter("synthembed_inputs", "inputs embedded", tag_keys=tags)
        self.tokens = metrics.Counter("synthembed_tokens", "tokens embedded (usage.prompt_tokens)", tag_keys=tags)
        self.truncated = metrics.Counter("synthembed_truncated_inputs", "inputs cut to the token cap", tag_keys=tags)
        self.nonfinite = metrics.Counter("synthembed_nonfinite_embeddings", "answers refused: NaN/inf in a vector",
                                         tag_keys=tags)
        self.latency = metrics.Histogram(
            "synthembed_request_latency_s", "request latency inside the replica", LATENCY_BOUNDS, tag_keys=tags)
        self.batch_items = metrics.Histogram(
            "synthembed_batch_items", "inputs per forward pass", ITEM_BOUNDS, tag_keys=tags)
        self.batch_tokens = metrics.Histogram(
            "synthembed_batch_padded_tokens", "padded tokens per forward pass", TOKEN_BOUNDS, tag_keys=tags)
        self.forward_s = metrics.Histogram(
            "synthembed_forward_latency_s", "forward pass time", LATENCY_BOUNDS, tag_keys=tags)
        self.queued = metrics.Gauge(
            "synthembed_queued_inputs", "inputs still waiting when the last forward pass started", tag_keys=tags)
        for m in (self.inputs, self.tokens, self.truncated, self.nonfinite, self.latency, self.batch_items,
                  self.batch_tokens, self.forward_s, self.queued):
            m.set_default_tags(self.default_tags)

    def request(self, status: int, seconds: float | None = None) -> None:
        self.requests.inc(1, tags={**self.default_tags, "status": str(status)})
        if seconds is not None:
            self.latency.observe(seconds)
