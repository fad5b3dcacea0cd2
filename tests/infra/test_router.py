"""The router's own behaviour: invocations answered, everything else forwarded, stubbed operations,
and the real-handler hooks (a binary per invocation, a Lambda Invoke API such as cargo lambda watch)."""

from __future__ import annotations

import json
import sys
import textwrap

import boto3
import pytest
from botocore.config import Config

from conftest import REGION, MotoStack
from router import Answer, CutBody, FunctionError, LambdaRouter, Request, ServiceError, command_handler, function_name, http_invoke_handler, json_error, s3_operation, scripted


def client(service: str, port: int):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def test_function_names_come_from_names_arns_and_qualified_names() -> None:
    assert function_name("lago-dev-transform") == "lago-dev-transform"
    assert function_name("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Alago-dev-transform") == "lago-dev-transform"
    assert function_name("arn:aws:lambda:us-east-1:123456789012:function:lago-dev-transform:live") == "lago-dev-transform"
    assert function_name("lago-dev-transform:3") == "lago-dev-transform"


def test_invocations_are_answered_and_everything_else_reaches_moto(stack: MotoStack) -> None:
    stack.router.register("echo", lambda payload: {"got": payload})
    lam = client("lambda", stack.router.port)

    ok = lam.invoke(FunctionName="echo", Payload=json.dumps({"a": 1}))
    assert json.loads(ok["Payload"].read()) == {"got": {"a": 1}}
    assert "FunctionError" not in ok

    # Anything the router does not answer is moto's: a bucket made through the router is in moto.
    client("s3", stack.router.port).create_bucket(Bucket="through-the-router")
    assert "through-the-router" in [b["Name"] for b in stack.client("s3").list_buckets()["Buckets"]]


def test_a_function_error_is_reported_the_lambda_way(stack: MotoStack) -> None:
    stack.router.register("boom", scripted([FunctionError("Retryable", "throttled")]))

    got = client("lambda", stack.router.port).invoke(FunctionName="boom", Payload=b"{}")

    assert got["StatusCode"] == 200
    assert got["FunctionError"] == "Unhandled"
    assert json.loads(got["Payload"].read()) == {"errorType": "Retryable", "errorMessage": "throttled"}


def test_an_operation_moto_lacks_can_be_stubbed(stack: MotoStack) -> None:
    # moto has no BatchExecuteStatement: the router answers it, and records the SQL sent.
    stack.router.register_operation("RedshiftData.BatchExecuteStatement", lambda req: {"Id": "batch-1", "Database": req["Database"]})
    stack.router.register_operation(
        "RedshiftData.CancelStatement", lambda req: (_ for _ in ()).throw(ServiceError("ValidationException", "no such statement"))
    )
    rd = client("redshift-data", stack.router.port)

    got = rd.batch_execute_statement(WorkgroupName="lago-dev", Database="dev", Sqls=["BEGIN", "COPY x FROM 's3://b/k'"])

    assert got["Id"] == "batch-1"
    [(target, request)] = [c for c in stack.router.operation_calls if c[0].endswith("BatchExecuteStatement")]
    assert request["Sqls"] == ["BEGIN", "COPY x FROM 's3://b/k'"]
    with pytest.raises(rd.exceptions.ValidationException):
        rd.cancel_statement(Id="nope")


def test_the_binary_hook_runs_one_process_per_invocation(stack: MotoStack) -> None:
    # A stand-in for a Rust test binary: the event on stdin, the result on stdout, errors as JSON.
    program = textwrap.dedent(
        """
        import json, sys
        event = json.load(sys.stdin)
        if event.get("fail"):
            print(json.dumps({"errorType": "InvalidInput", "errorMessage": "bad event"}))
            sys.exit(1)
        print(json.dumps({"echo": event}))
        """
    )
    stack.router.register("binary", command_handler([sys.executable, "-c", program]))
    lam = client("lambda", stack.router.port)

    assert json.loads(lam.invoke(FunctionName="binary", Payload=b'{"x": 2}')["Payload"].read()) == {"echo": {"x": 2}}
    failed = lam.invoke(FunctionName="binary", Payload=b'{"fail": true}')
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "InvalidInput"


def test_the_http_hook_forwards_to_a_lambda_invoke_api(stack: MotoStack) -> None:
    # A second router plays `cargo lambda watch`: it serves the Invoke API for the real handlers.
    emulator = LambdaRouter().start()
    try:
        emulator.register("transform", scripted([{"status": "ok"}, FunctionError("Retryable", "slow down")]))
        stack.router.register("lago-dev-transform", http_invoke_handler(f"http://127.0.0.1:{emulator.port}", function="transform"))
        lam = client("lambda", stack.router.port)

        assert json.loads(lam.invoke(FunctionName="lago-dev-transform", Payload=b"{}")["Payload"].read()) == {"status": "ok"}
        failed = lam.invoke(FunctionName="lago-dev-transform", Payload=b"{}")
        assert json.loads(failed["Payload"].read()) == {"errorType": "Retryable", "errorMessage": "slow down"}
        assert [c.function for c in emulator.invocations] == ["transform", "transform"]
    finally:
        emulator.stop()


def test_hooks_see_each_forwarded_request_and_may_answer_or_cut_it(stack: MotoStack) -> None:
    s3 = client("s3", stack.router.port)
    s3.create_bucket(Bucket="hooked")
    s3.put_object(Bucket="hooked", Key="dir/a b.bin", Body=bytes(range(256)) * 4096)
    seen: list[tuple[str | None, str, str]] = []

    def hook(request: Request) -> Answer | CutBody | None:
        seen.append((s3_operation(request), *request.bucket_and_key))
        if request.target == "AWSStepFunctions.ListStateMachines":
            return json_error("ThrottlingException", "Rate exceeded")
        if s3_operation(request) == "GetObject":
            return CutBody(1000)
        return None

    stack.router.on_request(hook)
    # A GetObject cut after 1000 bytes: the client sees the connection drop mid-body.
    body = s3.get_object(Bucket="hooked", Key="dir/a b.bin")["Body"]
    with pytest.raises(Exception):
        body.read()
    # An answer of the hook's instead of moto's.
    with pytest.raises(Exception, match="ThrottlingException"):
        client("stepfunctions", stack.router.port).list_state_machines()
    # Everything else reaches moto, seen by the hook first.
    assert s3.head_object(Bucket="hooked", Key="dir/a b.bin")["ContentLength"] == 256 * 4096
    assert seen[0] == ("GetObject", "hooked", "dir/a b.bin")
    assert seen[-1] == ("HeadObject", "hooked", "dir/a b.bin")
