"""Synthetic training data for embedders on Ray Data (the paper's six task types, ~93 languages).

Entry point: `synthembed.synth.run(config) -> Path` (the output folder; see `synthembed.synth.schema`
for the folder layout and the example columns). `jobs/generate.py` and the pipeline job both call it.
"""

from synthembed.synth.config import EngineConfig, GenerateConfig, LengthBounds, SamplingConfig
from synthembed.synth.pipeline import read_examples, run
from synthembed.synth.schema import EXAMPLE_COLUMNS, EXAMPLE_SCHEMA, REJECT_SCHEMA

__all__ = ["run", "read_examples", "GenerateConfig", "EngineConfig", "SamplingConfig", "LengthBounds",
           "EXAMPLE_SCHEMA", "EXAMPLE_COLUMNS", "REJECT_SCHEMA"]
