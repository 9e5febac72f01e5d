"""Pipeline specs: schema and loading."""

from llmops.specs.loader import SpecError, load_pipeline, load_spec, parse_spec, spec_hash
from llmops.specs.schema import PipelineSpec

__all__ = ["PipelineSpec", "SpecError", "load_pipeline", "load_spec", "parse_spec", "spec_hash"]
