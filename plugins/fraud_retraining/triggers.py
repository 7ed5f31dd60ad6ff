"""Deferrable wait for a SageMaker Autopilot V2 job, run by the Airflow triggerer.

The worker slot is released while Autopilot trains (hours, in a real account). The trigger polls
DescribeAutoMLJobV2; when the job ends it fires with the job's status and FailureReason; when
the deadline passes first it calls StopAutoMLJob itself, so a stuck or over-budget job stops
billing even if no worker picks the task up again, and fires with status "TimedOut".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import ClientError

from fraud_retraining.engines.sagemaker import job_outcome, stop_job

TIMED_OUT = "TimedOut"
THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}
)


def _sagemaker_client(aws_conn_id: str) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sagemaker").get_conn()


async def _describe(call: Any, poll_interval_s: float, **kwargs: Any) -> dict[str, Any]:
    """One Describe* call off the event loop (boto3 blocks); throttling is routine when many
    resources are polled, so it waits and retries; any other error is a real failure."""
    while True:
        try:
            return await asyncio.to_thread(call, **kwargs)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in THROTTLING_CODES:
                raise
            await asyncio.sleep(poll_interval_s)


class AutoMLJobV2Trigger(BaseTrigger):
    """Fire when Autopilot job `job_name` ends, or stop it at `deadline_epoch_s` (UNIX seconds)."""

    def __init__(
        self,
        *,
        job_name: str,
        aws_conn_id: str,
        deadline_epoch_s: float,
        poll_interval_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.job_name = job_name
        self.aws_conn_id = aws_conn_id
        self.deadline_epoch_s = float(deadline_epoch_s)
        self.poll_interval_s = float(poll_interval_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "aws_conn_id": self.aws_conn_id,
                "deadline_epoch_s": self.deadline_epoch_s,
                "poll_interval_s": self.poll_interval_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = await asyncio.to_thread(_sagemaker_client, self.aws_conn_id)
        while True:
            description = await _describe(
                client.describe_auto_ml_job_v2, self.poll_interval_s, AutoMLJobName=self.job_name
            )
            outcome = job_outcome(description)
            if outcome["terminal"]:
                self.log.info("Autopilot job %s ended: %s", self.job_name, outcome["status"])
                yield TriggerEvent(outcome)
                return
            remaining = self.deadline_epoch_s - time.time()
            if remaining <= 0:
                status = await asyncio.to_thread(stop_job, client, self.job_name)
                self.log.warning(
                    "Autopilot job %s ran past its deadline; stop requested (%s)", self.job_name, status
                )
                yield TriggerEvent(
                    {
                        **outcome,
                        "status": TIMED_OUT,
                        "terminal": True,
                        "remote_status_after_stop": status,
                        "failure_reason": f"timed out after the deadline; StopAutoMLJob sent ({status})",
                    }
                )
                return
            await asyncio.sleep(min(self.poll_interval_s, max(remaining, 0.0)))


ENDPOINT_TRANSITIONAL = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})


class SageMakerEndpointTrigger(BaseTrigger):
    """Fire when endpoint `endpoint_name` leaves Creating/Updating, or at the deadline.

    The event carries the endpoint's final status and the config that really serves, so the
    task can tell "InService on our config" from SageMaker's silent blue/green rollback.
    """

    def __init__(
        self,
        *,
        endpoint_name: str,
        aws_conn_id: str,
        deadline_epoch_s: float,
        poll_interval_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.endpoint_name = endpoint_name
        self.aws_conn_id = aws_conn_id
        self.deadline_epoch_s = float(deadline_epoch_s)
        self.poll_interval_s = float(poll_interval_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "endpoint_name": self.endpoint_name,
                "aws_conn_id": self.aws_conn_id,
                "deadline_epoch_s": self.deadline_epoch_s,
                "poll_interval_s": self.poll_interval_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = await asyncio.to_thread(_sagemaker_client, self.aws_conn_id)
        while True:
            description = await _describe(
                client.describe_endpoint, self.poll_interval_s, EndpointName=self.endpoint_name
            )
            status = description.get("EndpointStatus")
            summary = {
                "EndpointName": description.get("EndpointName"),
                "EndpointStatus": status,
                "EndpointConfigName": description.get("EndpointConfigName"),
                "FailureReason": description.get("FailureReason", ""),
            }
            if status not in ENDPOINT_TRANSITIONAL:
                yield TriggerEvent({"timed_out": False, "description": summary})
                return
            remaining = self.deadline_epoch_s - time.time()
            if remaining <= 0:
                yield TriggerEvent({"timed_out": True, "description": summary})
                return
            await asyncio.sleep(min(self.poll_interval_s, max(remaining, 0.0)))
