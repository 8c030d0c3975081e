"""Evaluation with mteb: the model wrapper, local task folders, Ray Data encoding with a cache, reports.

Entry points: `run(config) -> Path` (one model, many tasks) and `compare(folders, out_dir)`.
"""

from synthembed.evaluate.config import EvalModelConfig, EvaluateConfig, RayEncodeConfig, EvalTask
from synthembed.evaluate.local_tasks import LocalTaskError, build_task, load_folder
from synthembed.evaluate.report import compare, parse_reference_scores
from synthembed.evaluate.run import HubTaskError, load_task, run

__all__ = [
    "EvalModelConfig", "EvaluateConfig", "RayEncodeConfig", "EvalTask", "LocalTaskError", "HubTaskError",
    "build_task", "load_folder", "load_task", "compare", "parse_reference_scores", "run",
]
