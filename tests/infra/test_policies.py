"""parliament, an IAM policy linter, over every policy the template declares: the roles' inline
policies, the managed policy, the bucket, queue, topic and secret policies. CloudFormation
intrinsics are resolved to placeholders of the right shape for each resource type (an ARN where an
ARN goes), so parliament checks actions, resources and condition keys against each other as it
would on the deployed policies; `Fn::If` statements are checked in both branches.

Not given to parliament: trust policies (no Resource element, which parliament requires) and the
key policy (its `Resource: "*"` means the key itself); cfn-lint and checkov check both, and
test_template.py checks the key policy's statements one by one. The few findings parliament makes
that are not true of IAM are listed below, each with its reason.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import pytest

from support import resources, template

ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": "lago-dev", "AWS::URLSuffix": "amazonaws.com"}


def _name(logical: str) -> str:
    return "lago-dev-" + re.sub(r"(?<!^)(?=[A-Z])", "-", logical).lower()


def arn(logical: str) -> str:
    kind = resources()[logical]["Type"]
    name = _name(logical)
    return {
        "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
        "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
        "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{ACCOUNT}:policy/{name}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
        "AWS::Kinesis::Stream": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}",
        "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{name}:*",
        "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
        "AWS::Serverless::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}",
        "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
        "AWS::SecretsManager::Secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf",
        "AWS::RedshiftServerless::Namespace": f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:namespace/0b3c1e5e-8d6f-4c59-9d5a-6f1e0c2b7a41",
        "AWS::RedshiftServerless::Workgroup": f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/0b3c1e5e-8d6f-4c59-9d5a-6f1e0c2b7a42",
        "AWS::CloudTrail::Trail": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{name}",
    }[kind]


def ref(logical: str) -> Any:
    if logical in PSEUDO:
        return PSEUDO[logical]
    params = template()["Parameters"]
    if logical in params:
        p = params[logical]
        default = p.get("Default", "")
        if p["Type"] == "CommaDelimitedList":
            return [v for v in str(default).split(",") if v] or ["10.0.0.0/16" if "Cidr" in logical else "vpce-0123456789abcdef0"]
        return str(default) if default != "" else f"placeholder-{logical.lower()}"
    kind = resources()[logical]["Type"]
    if kind in ("AWS::SNS::Topic", "AWS::Serverless::StateMachine", "AWS::SecretsManager::Secret", "AWS::IAM::ManagedPolicy"):
        return arn(logical)
    if kind == "AWS::SQS::Queue":
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{_name(logical)}"
    if kind == "AWS::KMS::Key":
        return "1234abcd-12ab-34cd-56ef-1234567890ab"
    return _name(logical).replace("-", "_") if kind.startswith("AWS::Glue::") else _name(logical)


def sub(text: str, extra: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in extra:
            return str(resolve(extra[name]))
        if name.endswith(".Arn"):
            return arn(name[: -len(".Arn")])
        if "." in name:
            return _name(name.split(".")[0])
        value = ref(name)
        return ",".join(value) if isinstance(value, list) else str(value)

    return re.sub(r"\$\{(?!!)([A-Za-z0-9_:.]+)\}", one, text)


NO_VALUE = object()


def resolve(value: Any, branch: int = 1) -> Any:
    """`branch` picks the side of every Fn::If (1: condition true, 2: false)."""
    if isinstance(value, list):
        out = [resolve(v, branch) for v in value]
        return [v for v in out if v is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return NO_VALUE if arg == "AWS::NoValue" else ref(arg)
        if key == "Fn::GetAtt":
            logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
            return arn(logical) if attr.endswith("Arn") else _name(logical)
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            return sub(text, extra)
        if key == "Fn::If":
            return resolve(arg[branch], branch)
        if key == "Fn::Join":
            return arg[0].join(str(v) for v in resolve(arg[1], branch))
    out = {k: resolve(v, branch) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not NO_VALUE}


def policy_documents() -> Iterator[tuple[str, Any]]:
    for name, res in resources().items():
        props = res.get("Properties", {})
        kind = res["Type"]
        if kind == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                yield f"{name} {p['PolicyName']}", p["PolicyDocument"]
        elif kind in ("AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            yield name, props["PolicyDocument"]
        elif kind == "AWS::SecretsManager::ResourcePolicy":
            yield name, props["ResourcePolicy"]


# (issue, detail pattern, why it is not a defect)
NOT_DEFECTS = [
    (
        "RESOURCE_MISMATCH",
        r'"action": "states:DescribeExecution", "required_format": "arn:\*:states:\*:\*:express:',
        "DescribeExecution takes standard executions (arn:…:execution:<state machine>:<name>) too; "
        "parliament's table lists only the express form",
    ),
    (
        "UNKNOWN_CONDITION_FOR_ACTION",
        r"Unknown condition aws:(ViaAWSService|PrincipalIsAWSService) for action",
        "global condition keys, valid on every action; parliament's tables list only service keys",
    ),
    (
        "UNKNOWN_CONDITION_FOR_ACTION",
        r"Unknown condition s3:TlsVersion for action s3:",
        "AWS's deny-old-TLS pattern on s3:*: actions without the key are left to the TLS-only deny",
    ),
    (
        "MISMATCHED_TYPE",
        r"s3:TlsVersion requires a value of type Numeric but given \[.1\.2.\]",
        "IAM condition values are strings; \"1.2\" is compared as a number",
    ),
    (
        "MISMATCHED_TYPE_BUT_USABLE",
        r"StringNotEquals requires a value of type String but given Arn",
        "S3 documents the key ARN as the value of s3:x-amz-server-side-encryption-aws-kms-key-id",
    ),
]


def defects(findings: list[Any]) -> list[str]:
    out = []
    for f in findings:
        detail = json.dumps(f.detail)
        if not any(f.issue == issue and re.search(pattern, detail) for issue, pattern, _ in NOT_DEFECTS):
            out.append(f"{f.issue}: {detail} at {f.location}")
    return out


@pytest.mark.parametrize("branch", [1, 2], ids=["conditions-true", "conditions-false"])
@pytest.mark.parametrize(("where", "document"), list(policy_documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_parliament_finds_nothing(where: str, document: Any, branch: int) -> None:
    from parliament import analyze_policy_string

    resolved = resolve(document, branch)
    if not resolved.get("Statement"):
        return
    text = json.dumps(resolved)
    assert not re.search(r"\$\{(?!aws:)", text) and "Fn::" not in text, text
    assert defects(analyze_policy_string(text).findings) == [], f"{where}: {text}"


def test_every_kind_of_policy_is_linted() -> None:
    kinds = {resources()[w.split()[0]]["Type"] for w, _ in policy_documents()}
    assert {"AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SecretsManager::ResourcePolicy"} <= kinds


def test_parliament_finds_a_defect_it_is_given() -> None:
    """The lint can fail: the defect fixed in the COPY role (s3:GetBucketLocation under an
    s3:prefix condition, which it never carries) is found."""
    from parliament import analyze_policy_string

    broken = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
              "Resource": "arn:aws:s3:::lago-dev-lake", "Condition": {"StringLike": {"s3:prefix": ["processed/*"]}}}]}  # fmt: skip
    assert any("s3:prefix for action s3:GetBucketLocation" in d for d in defects(analyze_policy_string(json.dumps(broken)).findings))
