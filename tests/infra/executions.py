"""Running a real ASL file in moto's Step Functions interpreter: deploy it with a notification topic
(and a queue subscribed to it), start an execution, wait for its end, and read its history."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import ACCOUNT, REGION, MotoStack
from support import load_asl


def lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


class Run:
    """One finished execution: its status, history, the states it entered and what SNS got."""

    def __init__(self, desc: dict[str, Any], events: list[dict[str, Any]], notifications: list[dict[str, Any]], branch_states: set[str]):
        self.status = desc["status"]
        self.desc = desc
        self.events = events
        self.notifications = notifications
        self.branch_states = branch_states
        # Every state entered, in the order of the history.
        self.path = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]

    def branch(self, states: set[str]) -> list[str]:
        return [s for s in self.path if s in states]

    def main_path(self) -> list[str]:
        return [s for s in self.path if s not in self.branch_states]

    def failure(self) -> tuple[str | None, str | None]:
        for e in self.events:
            if e["type"] == "ExecutionFailed":
                d = e.get("executionFailedEventDetails", {})
                return d.get("error"), d.get("cause")
        return None, None

    def task_failures(self) -> list[str]:
        return [e["taskFailedEventDetails"]["error"] for e in self.events if e["type"] == "TaskFailed"]

    def output(self) -> Any:
        return json.loads(self.desc.get("output") or "null")


class Deployed:
    """One state machine in moto, its notification topic and a queue subscribed to it."""

    def __init__(self, stack: MotoStack, asl: Path, values: dict[str, str], *, branch_states: set[str] = frozenset()):
        self.stack = stack
        self.sfn = stack.client("stepfunctions")
        self.branch_states = set(branch_states)
        sns, sqs = stack.client("sns"), stack.client("sqs")
        suffix = uuid.uuid4().hex[:8]
        self.topic_arn = sns.create_topic(Name=f"lago-test-notifications-{suffix}")["TopicArn"]
        self.queue_url = sqs.create_queue(QueueName=f"lago-test-notified-{suffix}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        self.sqs = sqs
        definition = load_asl(asl, {**values, "NotificationTopicArn": self.topic_arn})
        self.arn = self.sfn.create_state_machine(
            name=f"lago-test-{asl.name.split('.')[0]}-{suffix}",
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/lago-test-state-machine",
            type="STANDARD",
        )["stateMachineArn"]

    def run(self, execution_input: dict[str, Any], timeout: float = 60.0) -> Run:
        arn = self.sfn.start_execution(stateMachineArn=self.arn, name=uuid.uuid4().hex, input=json.dumps(execution_input))["executionArn"]
        deadline = time.monotonic() + timeout
        while True:
            desc = self.sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"execution still RUNNING after {timeout}s")
            time.sleep(0.05)
        events, token = [], None
        while True:
            kw = {"executionArn": arn, "maxResults": 1000}
            if token:
                kw["nextToken"] = token
            page = self.sfn.get_execution_history(**kw)
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        return Run(desc, events, self.notifications(), self.branch_states)

    def notifications(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]
