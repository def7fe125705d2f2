"""`qcli pipeline run`: every stage of the flow in one command (see :mod:`.run`)."""

from quantcli.pipeline.run import PipelineResult, run_pipeline

__all__ = ["PipelineResult", "run_pipeline"]
