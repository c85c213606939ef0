"""batchdrop in Python: submit a file of Message Batches requests, follow its job, read its
results, against the local stack or a deployed one (docs/local.md).

    from batchdrop_client import Batchdrop

    bd = Batchdrop.from_env()
    job = bd.submit("reviews.jsonl")
    final = bd.wait(job, timeout=600)
    for response in bd.results(job):
        print(response.custom_id, response.result.type)

Records mode (docs/records.md): `bd.put_pipeline("reviews.yaml")` validates and uploads a
pipeline; `bd.outputs(job)`, `bd.download_outputs(job, path)` and `bd.output_rows(job, 10)`
read a finished job's outputs.csv.
"""

from batchdrop_client.client import Batchdrop, CancelRequest, Job, JobList, Outputs, PipelineObject, PutPipeline
from batchdrop_client.errors import (
    AlreadyEnded,
    AwaitingApproval,
    BatchdropError,
    InputFileError,
    InvalidJobId,
    JobNotFound,
    ManifestMissing,
    NoOutputs,
    NoReport,
    NotConfigured,
    NotFinished,
    PipelineConflict,
    PipelineInvalid,
    PipelineNotFound,
    ReportNotReady,
    StackNotFound,
    StackNotRunning,
    WaitTimeout,
)
from batchdrop_client.views import BatchView, JobView, Progress

__all__ = [
    "AlreadyEnded",
    "AwaitingApproval",
    "BatchView",
    "Batchdrop",
    "BatchdropError",
    "CancelRequest",
    "InputFileError",
    "InvalidJobId",
    "Job",
    "JobList",
    "JobNotFound",
    "JobView",
    "ManifestMissing",
    "NoOutputs",
    "NoReport",
    "NotConfigured",
    "NotFinished",
    "Outputs",
    "PipelineConflict",
    "PipelineInvalid",
    "PipelineNotFound",
    "PipelineObject",
    "Progress",
    "PutPipeline",
    "ReportNotReady",
    "StackNotFound",
    "StackNotRunning",
    "WaitTimeout",
]
