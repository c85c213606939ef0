"""A Lambda context object for handlers called in-process (the local runner, tests): the
attributes the Python runtime's context has, with the remaining time counting down from
the function's Timeout."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT_ID = "123456789012"


@dataclass
class LocalLambdaContext:
    """Duck-types `awslambdaric`'s LambdaContext (and Powertools' typing of it)."""

    function_name: str
    memory_limit_in_mb: int = 128
    timeout_seconds: float = 3.0
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: object | None = None
    client_context: object | None = None
    tenant_id: str | None = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self.invoked_function_arn:
            self.invoked_function_arn = (
                f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}"
            )
        if not self.log_group_name:
            self.log_group_name = f"/aws/lambda/{self.function_name}"
        if not self.log_stream_name:
            day = time.strftime("%Y/%m/%d", time.gmtime())
            self.log_stream_name = f"{day}/[{self.function_version}]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @property
    def timed_out(self) -> bool:
        return time.monotonic() > self._deadline
