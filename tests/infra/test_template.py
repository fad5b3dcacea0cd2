"""Static checks of the deployable: template.yaml and the ASL files.

- cfn-lint: 0 errors, 0 warnings (a rule silenced in the template's Metadata says why, inline);
- `sam validate --lint` (offline);
- statelint on every ASL file, as written and after substitution;
- checkov: 0 failed checks, every skip justified inline;
- cross-references: ASL ↔ template ↔ function crates, and every substitution defined;
- least privilege: no wildcard actions, `Resource: "*"` only for APIs that cannot be scoped;
- the lake key: administration apart from use, use only through the services that keep the data
  (`kms:ViaService`), in the key policy and in every role;
- logs: every group the stack writes to is declared, with retention and the key;
- the processed tables declared in the template match what the transform writes;
- docs/deploy.md explains every parameter, in the order `sam deploy --guided` asks for them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import (
    FUNCTIONS,
    ROOT,
    STATEMACHINES,
    TEMPLATE,
    asl_files,
    load_asl,
    resources,
    substitutions_in,
    template,
    tool,
)

DATASETS = ("clientes", "proveedores", "transacciones", "trm")


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", **kw.pop("env", {})}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, check=False, **kw)


# --- linters ---------------------------------------------------------------------------------


def test_cfn_lint_reports_no_errors_and_no_warnings() -> None:
    done = run([tool("cfn-lint"), "--format", "json", "--", str(TEMPLATE)])
    matches = json.loads(done.stdout or "[]")
    found = [
        f"{m['Rule']['Id']} {m['Location']['Path']}: {m['Message']}"
        for m in matches
        if m["Level"] in ("Error", "Warning")
    ]
    assert found == [], "\n".join(found)
    assert done.returncode in (0, 8), done.stderr  # 8: informational findings only


def test_sam_validate_lint_passes_offline() -> None:
    done = run([tool("sam"), "validate", "--lint", "--region", "us-east-1", "--template-file", str(TEMPLATE)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is a valid SAM Template" in done.stdout + done.stderr


def asl_substitution_values(path: Path) -> dict[str, str]:
    """Plausible values of the right type for every `${Name}` of an ASL file (for statelint)."""
    values = {}
    for name in substitutions_in(path.read_text(encoding="utf-8")):
        if name.endswith("FunctionArn"):
            values[name] = f"arn:aws:lambda:us-east-1:123456789012:function:lago-lint-{name}"
        elif name.endswith("TopicArn"):
            values[name] = "arn:aws:sns:us-east-1:123456789012:lago-lint"
        elif name.endswith(("Seconds", "Polls")):
            values[name] = "3"
        else:
            values[name] = "true"
    return values


@pytest.mark.parametrize("path", asl_files(), ids=lambda p: p.name)
def test_statelint_accepts_the_asl_as_written_and_substituted(path: Path, tmp_path: Path) -> None:
    as_written = run([tool("statelint"), str(path)])
    assert as_written.returncode == 0, as_written.stdout + as_written.stderr
    substituted = tmp_path / path.name
    substituted.write_text(json.dumps(load_asl(path, asl_substitution_values(path))), encoding="utf-8")
    done = run([tool("statelint"), str(substituted)])
    assert done.returncode == 0, done.stdout + done.stderr


# Checks of our own (YAML, tests/infra/checkov/) for what checkov's catalogue does not cover.
CUSTOM_CHECKS = Path(__file__).parent / "checkov"
CUSTOM = {"CKV2_LAGO_1": "TrailBucket", "CKV2_LAGO_2": "Database", "CKV2_LAGO_3": "Trail", "CKV2_LAGO_4": "LakeBucketPolicy"}


def checkov(template_file: Path, *extra: str) -> dict[str, Any]:
    # --skip-download: no guideline look-ups (the run is offline and deterministic).
    done = run(
        [tool("checkov"), "--file", str(template_file), "--framework", "cloudformation", "--skip-download",
         "--external-checks-dir", str(CUSTOM_CHECKS), "--output", "json", *extra],
        env={"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    return json.loads(done.stdout)


def test_checkov_reports_no_failed_checks() -> None:
    report = checkov(TEMPLATE)
    results = report["results"]
    passed = {(c["check_id"], c["resource"].split(".")[-1]) for c in results["passed_checks"]}
    for check, resource in CUSTOM.items():
        assert any(c == check and r.endswith(resource) for c, r in passed), f"{check} did not pass on {resource}"
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert results["parsing_errors"] == []
    assert report["summary"]["passed"] > 100


def test_the_custom_checks_fail_on_a_template_without_what_they_check(tmp_path: Path) -> None:
    """Object Lock off on the trail bucket, the IAM_ALLOWED_PRINCIPALS default granted, S3 data
    events dropped from the trail, the lake's network deny keyed on something other than the VPC
    endpoint: each custom check fails on exactly that resource."""
    text = TEMPLATE.read_text(encoding="utf-8")
    for old, new in (
        ("      ObjectLockEnabled: true\n", "      ObjectLockEnabled: false\n"),
        ("        CreateTableDefaultPermissions: []\n",
         "        CreateTableDefaultPermissions: [{ Principal: { DataLakePrincipalIdentifier: IAM_ALLOWED_PRINCIPALS }, Permissions: [ALL] }]\n"),
        ('["AWS::S3::Object"]', '["AWS::DynamoDB::Table"]'),
        ("{ aws:SourceVpce: !Ref AllowedVpcEndpointIds }", "{ aws:SourceVpc: !Ref AllowedVpcEndpointIds }"),
    ):  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    broken = tmp_path / "template.yaml"
    broken.write_text(text, encoding="utf-8")
    results = checkov(broken, "--check", ",".join(CUSTOM))["results"]
    failed = sorted((c["check_id"], c["resource"].split(".")[-1]) for c in results["failed_checks"])
    assert failed == [
        ("CKV2_LAGO_1", "TrailBucket"), ("CKV2_LAGO_2", "ProcessedDatabase"), ("CKV2_LAGO_2", "RawDatabase"),
        ("CKV2_LAGO_3", "Trail"), ("CKV2_LAGO_4", "LakeBucketPolicy"),
    ]  # fmt: skip


def test_every_checkov_skip_carries_its_reason() -> None:
    for name, res in resources().items():
        for skip in (res.get("Metadata") or {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip.get("id", "")), f"{name}: {skip}"
            assert len(skip.get("comment", "").split()) >= 4, f"{name}: skip {skip['id']} needs a reason"


# --- cross-references ------------------------------------------------------------------------


def state_machines() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::StateMachine")


def functions() -> dict[str, dict[str, Any]]:
    return resources("AWS::Serverless::Function")


def function_crates() -> dict[str, Path]:
    """Package name → crate dir, for every crate under functions/."""
    crates = {}
    for manifest in sorted(FUNCTIONS.glob("*/Cargo.toml")):
        package = tomllib.loads(manifest.read_text(encoding="utf-8"))["package"]["name"]
        crates[package] = manifest.parent
    return crates


def lambda_tasks(asl: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    def walk(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, st in states.items():
            if st.get("Type") == "Task" and str(st.get("Resource", "")).startswith("arn:aws:states:::lambda:invoke"):
                yield name, st
            for branch in st.get("Branches", []):
                yield from walk(branch["States"])
            if "ItemProcessor" in st:
                yield from walk(st["ItemProcessor"]["States"])

    yield from walk(asl["States"])


def test_every_asl_file_belongs_to_a_state_machine_and_every_substitution_is_defined() -> None:
    used = set()
    for name, sm in state_machines().items():
        props = sm["Properties"]
        path = ROOT / props["DefinitionUri"]
        used.add(path.resolve())
        text = path.read_text(encoding="utf-8")
        defined = set(props.get("DefinitionSubstitutions", {}))
        assert substitutions_in(text) - defined == set(), f"{name}: substitutions used but not defined"
        assert defined - substitutions_in(text) == set(), f"{name}: substitutions defined but never used"
    assert {p.resolve() for p in asl_files()} == used


def test_every_lambda_the_asl_invokes_is_a_function_of_the_template() -> None:
    fns = functions()
    for sm_name, sm in state_machines().items():
        props = sm["Properties"]
        asl = json.loads((ROOT / props["DefinitionUri"]).read_text(encoding="utf-8"))
        subs = props["DefinitionSubstitutions"]
        tasks = list(lambda_tasks(asl))
        assert tasks, f"{sm_name} invokes no Lambda"
        for state, task in tasks:
            ref = task["Parameters"]["FunctionName"]
            m = re.fullmatch(r"\$\{(\w+)\}", ref)
            assert m, f"{state}: FunctionName must come from a substitution, got {ref!r}"
            value = subs[m.group(1)]
            assert isinstance(value, dict) and "Fn::GetAtt" in value, f"{state}: {m.group(1)} = {value!r}"
            target, attr = value["Fn::GetAtt"] if isinstance(value["Fn::GetAtt"], list) else value["Fn::GetAtt"].split(".")
            assert target in fns and attr == "Arn", f"{state} invokes {target}.{attr}, not a function of the template"
            # …and the state machine's role may invoke it.
            role = resources()[sm["Properties"]["Role"]["Fn::GetAtt"][0]]
            invocable = [
                r["Fn::GetAtt"][0]
                for p in role["Properties"]["Policies"]
                for s in p["PolicyDocument"]["Statement"]
                if "lambda:InvokeFunction" in _as_list(s.get("Action"))
                for r in _as_list(s["Resource"])
            ]
            assert target in invocable, f"the role of {sm_name} may not invoke {target}"


def test_every_function_crate_has_a_template_function_and_the_reverse() -> None:
    crates = function_crates()
    declared = {}
    for name, fn in functions().items():
        code_uri = Path(fn["Properties"]["CodeUri"])
        binary = fn["Metadata"]["BuildProperties"]["Binary"]
        declared[binary] = name
        assert code_uri == Path("functions") / binary, f"{name}: CodeUri {code_uri} is not the crate of {binary}"
        assert binary in crates, f"{name} builds {binary}, but functions/{binary} has no crate"
    missing = sorted(set(crates) - set(declared))
    assert missing == [], f"crates without a template function: {missing}"


def test_every_function_follows_the_runtime_conventions() -> None:
    globals_ = template()["Globals"]["Function"]
    for name, fn in functions().items():
        props = {**globals_, **fn["Properties"]}
        assert props["Runtime"] == "provided.al2023", name
        assert props["Architectures"] == ["arm64"], name
        assert props["Handler"] == "bootstrap", name
        assert "Tracing" not in props, f"{name}: X-Ray without SDK spans (see Globals)"
        assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda", name
        assert props["LoggingConfig"]["LogFormat"] == "JSON", name
        assert "KmsKeyArn" in props, name
        assert "Role" in props, f"{name}: an explicit role, so SAM adds no managed policy"
        assert 128 <= props["MemorySize"] <= 10240 and props["Timeout"] <= 900, name


# --- least privilege -------------------------------------------------------------------------

# The only actions allowed on `Resource: "*"`: APIs without resource-level permissions. Each
# such statement also carries a comment in the template naming the API.
UNSCOPABLE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "glue:GetSecurityConfiguration",
    "redshift-data:DescribeStatement",  # with a statement-owner condition (checked below)
    "ecr:GetAuthorizationToken",  # the registry token SageMaker pulls the XGBoost image with
    "cloudwatch:PutMetricData",  # training metrics, with a namespace condition
}


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def policy_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    def statements(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for s in doc.get("Statement", []):
            if isinstance(s, dict) and "Fn::If" in s:
                for branch in s["Fn::If"][1:]:
                    if isinstance(branch, dict) and "Effect" in branch:
                        yield branch
            elif isinstance(s, dict) and "Effect" in s:
                yield s

    for name, res in resources().items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                for s in statements(p["PolicyDocument"]):
                    yield name, s
        elif res["Type"] == "AWS::IAM::ManagedPolicy":
            for s in statements(props["PolicyDocument"]):
                yield name, s


def test_identity_policies_name_actions_one_by_one() -> None:
    for name, s in policy_statements():
        for action in _as_list(s["Action"]):
            assert "*" not in action, f"{name}: wildcard action {action}"


def test_resource_star_only_where_the_api_cannot_be_scoped() -> None:
    for name, s in policy_statements():
        if s["Effect"] == "Allow" and "*" in _as_list(s["Resource"]):
            extra = set(_as_list(s["Action"])) - UNSCOPABLE
            assert extra == set(), f"{name}: {sorted(extra)} on Resource '*'"
            if "redshift-data:DescribeStatement" in _as_list(s["Action"]):
                assert "redshift-data:statement-owner-iam-userid" in json.dumps(s.get("Condition"))


def test_every_star_resource_statement_is_explained_by_a_comment() -> None:
    lines = TEMPLATE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r'\s*Resource: "\*"', line) and not _in_key_policy(lines, i):
            start = next(j for j in range(i, -1, -1) if re.match(r"\s*- Sid:", lines[j]))
            block = "\n".join(lines[max(0, start - 3) : start])
            assert re.search(r"#.*(no resource-level|cannot be scoped|has no resource)", block), (
                f"template.yaml:{i + 1}: Resource \"*\" without a comment naming the API"
            )


def _in_key_policy(lines: list[str], i: int) -> bool:
    # Key policies and a secret's resource policy apply to their own resource: "*" means "this
    # key" or "this secret".
    for j in range(i, -1, -1):
        if re.match(r"      (KeyPolicy|ResourcePolicy|PolicyDocument|Policies):", lines[j]):
            return lines[j].strip().startswith(("KeyPolicy", "ResourcePolicy"))
    return False


def test_no_secret_values_in_the_template() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    keys = re.findall(r"(?m)^\s*-?\s*(\w*(?:Password|Secret)\w*)\s*:", text)
    allowed = {
        "ManageAdminPassword",  # Secrets Manager generates and keeps the admin password
        "AdminPasswordSecretKmsKeyId",
        "PiiSaltSecret",  # generated by Secrets Manager, read by ARN
        "PiiSaltSecretArn",
        "PiiSaltSecretPolicy",  # who may read it (only the transform)
        "SecretId",
        "PII_SALT_SECRET_ARN",
        "GenerateSecretString",
        "SecretStringTemplate",
        "PasswordLength",
    }
    assert set(keys) <= allowed, set(keys) - allowed
    ns = resources("AWS::RedshiftServerless::Namespace")
    for name, res in ns.items():
        assert res["Properties"]["ManageAdminPassword"] is True, name
    for name, res in resources("AWS::RedshiftServerless::Workgroup").items():
        assert res["Properties"]["PubliclyAccessible"] is False, name


# --- data plane ------------------------------------------------------------------------------


def _pattern_matches_key(rule: dict[str, Any], key: str) -> bool:
    keys = rule["Properties"]["EventPattern"]["detail"]["object"]["key"]
    return any(key.startswith(k["prefix"]) for k in keys)


def test_the_landing_rule_routes_raw_datasets_but_never_the_trades_archive() -> None:
    rule = resources("AWS::Events::Rule")["LandingRule"]
    for d in DATASETS:
        assert _pattern_matches_key(rule, f"raw/{d}/year=2025/month=05/day=10/a.csv")
    for key in ("raw/trades/year=2026/month=11/day=28/shard-1-2.ndjson.gz", "processed/clientes/x.parquet", "manifests/a.json"):
        assert not _pattern_matches_key(rule, key), key
    target = rule["Properties"]["Targets"][0]
    assert target["DeadLetterConfig"] and target["RetryPolicy"]


def _statement(role: str, sid: str) -> dict[str, Any]:
    return next(s for name, s in policy_statements() if name == role and s.get("Sid") == sid)


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_has_its_crawlers_and_the_reads_of_its_raw_prefix(dataset: str) -> None:
    # start-crawler starts lago-<env>-<zone>-<dataset>: a dataset without one fails its catalog branch.
    crawlers = {c["Properties"]["Name"]["Fn::Sub"]: c["Properties"] for c in resources("AWS::Glue::Crawler").values()}
    for zone in ("raw", "processed"):
        crawler = crawlers.get(f"lago-${{EnvironmentName}}-{zone}-{dataset}")
        assert crawler, f"no {zone} crawler for {dataset}"
        assert crawler["Targets"]["S3Targets"] == [{"Path": {"Fn::Sub": f"s3://${{LakeBucket}}/{zone}/{dataset}/"}}]
    # The transform and the raw crawler read raw/<dataset>/ only where the dataset is named.
    raw = {"Fn::Sub": f"${{LakeBucket.Arn}}/raw/{dataset}/*"}
    assert raw in _as_list(_statement("TransformRole", "ReadRawDatasets")["Resource"])
    assert raw in _as_list(_statement("CrawlerRole", "ReadCrawledZones")["Resource"])
    listed = _statement("CrawlerRole", "ListCrawledZones")["Condition"]["StringLike"]["s3:prefix"]
    assert f"raw/{dataset}/*" in listed


def _lago_bin() -> str | None:
    if os.environ.get("LAGO_BIN"):
        return os.environ["LAGO_BIN"]
    # The build directory scripts/env.sh uses, then the clone's own.
    cache = Path(os.environ.get("LAGO_CACHE", Path.home() / ".cache" / "lago")) / "target"
    for target in (Path(os.environ.get("CARGO_TARGET_DIR", cache)), ROOT / "target"):
        for profile in ("debug", "release"):
            if (target / profile / "lago").exists():
                return str(target / profile / "lago")
    return None


GLUE_TYPES = {
    "string": "string",
    "large_string": "string",
    "date32[day]": "date",
    "int64": "bigint",
    "timestamp[us, tz=UTC]": "timestamp",
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_processed_tables_match_what_the_transform_writes(dataset: str, tmp_path: Path) -> None:
    lago = _lago_bin()
    if lago is None:
        pytest.skip("set LAGO_BIN (or build the lago CLI) to compare with real Parquet")
    import pyarrow.parquet as pq

    raw = tmp_path / f"raw/{dataset}/year=2025/month=05/day=10/sample.csv"
    env = {**os.environ, "LAGO_PII_SALT": "infra-test"}
    subprocess.run([lago, "generate", "--dataset", dataset, "--rows", "20", "--out", str(raw)], check=True, capture_output=True, env=env)
    subprocess.run([lago, "transform", "--input", str(raw), "--lake", str(tmp_path)], check=True, capture_output=True, env=env)
    [part] = sorted(tmp_path.glob(f"processed/{dataset}/**/*.parquet"))
    written = _glue_columns(pq.read_schema(part))
    table = next(r for r in resources("AWS::Glue::Table").values() if r["Properties"]["TableInput"]["Name"] == dataset)
    declared = [(c["Name"], c["Type"]) for c in table["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]]
    assert declared == written


def test_processed_tables_are_the_ones_generated_from_the_contracts() -> None:
    """Every processed Glue table of the template is exactly what `lago catalog` generates from
    the contracts (name, type, parameters, partition keys, storage, columns and their comments):
    a contract change that the template does not follow fails here."""
    lago = _lago_bin()
    if lago is None:
        pytest.skip("set LAGO_BIN (or build the lago CLI) to generate the tables")
    out = subprocess.run([lago, "catalog"], check=True, capture_output=True, text=True, timeout=60)
    generated = json.loads(out.stdout)
    assert sorted(generated) == sorted(DATASETS)
    declared = {r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"] for r in resources("AWS::Glue::Table").values()}
    for dataset, table in generated.items():
        mine = json.loads(json.dumps(declared[dataset]))
        location = mine["StorageDescriptor"]["Location"]
        mine["StorageDescriptor"]["Location"] = location.get("Fn::Sub", location) if isinstance(location, dict) else location
        assert mine == table, dataset


def _glue_columns(schema) -> list[tuple[str, str]]:
    out = []
    for field in schema:
        t = str(field.type)
        m = re.fullmatch(r"decimal128\((\d+), (\d+)\)", t)
        out.append((field.name, f"decimal({m[1]},{m[2]})" if m else GLUE_TYPES[t]))
    return out


def test_trade_history_tables_match_what_the_history_writes(tmp_path: Path) -> None:
    """trades_history and user_features in the catalog are the columns `lago trades history` (the
    trades-history function's code) writes, and the partitions it hands the state machine carry the
    same columns."""
    lago = _lago_bin()
    if lago is None:
        pytest.skip("set LAGO_BIN (or build the lago CLI) to compare with real Parquet")
    import pyarrow.parquet as pq

    stream = tmp_path / "trades.ndjson"
    lake = tmp_path / "lake"
    for argv in (
        ["trades", "generate", "--trades", "300", "--users", "20", "--days", "3", "--out", str(stream)],
        ["trades", "replay", "--input", str(stream), "--lake", str(lake)],
        ["trades", "history", "--lake", str(lake)],
    ):
        subprocess.run([lago, *argv], check=True, capture_output=True, timeout=120)
    tables = {r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"] for r in resources("AWS::Glue::Table").values()}
    parts = sorted(lake.glob("processed/trades/year=*/month=*/day=*/*.parquet"))
    features = lake / "processed/features/user_features/user_features.parquet"
    assert parts and features.exists()
    for table, written in (("trades_history", parts[0]), ("user_features", features)):
        declared = [(c["Name"], c["Type"]) for c in tables[table]["StorageDescriptor"]["Columns"]]
        assert declared == _glue_columns(pq.read_schema(written)), table
    assert [k["Name"] for k in tables["trades_history"]["PartitionKeys"]] == ["year", "month", "day"]
    assert "PartitionKeys" not in tables["user_features"]


def test_the_analyst_grant_excludes_exactly_the_pii_derived_columns() -> None:
    grants = resources("AWS::LakeFormation::PrincipalPermissions")
    excluded = {}
    for res in grants.values():
        twc = res["Properties"]["Resource"].get("TableWithColumns")
        if twc:
            table = resources()[twc["Name"]["Ref"]]["Properties"]["TableInput"]["Name"]
            excluded[table] = set(twc["ColumnWildcard"]["ExcludedColumnNames"])
    assert excluded == {
        "clientes": {"numero_identificacion_hash", "email_masked"},
        "proveedores": set(),
        "transacciones": set(),
        "trm": set(),
        "trades_history": set(),
        "user_features": set(),
    }


@pytest.mark.parametrize("logical_id", sorted(functions()))
def test_every_variable_the_template_sets_is_read_by_the_function(logical_id: str) -> None:
    """The template and the crates agree on configuration names (a typo is a runtime failure)."""
    fn = functions()[logical_id]
    binary = fn["Metadata"]["BuildProperties"]["Binary"]
    names = set((fn["Properties"].get("Environment") or {}).get("Variables", {}))
    sources = [*sorted((FUNCTIONS / binary).rglob("*.rs")), *sorted((ROOT / "shared" / "src").rglob("*.rs"))]
    code = "\n".join(p.read_text(encoding="utf-8") for p in sources)
    unread = sorted(n for n in names if f'"{n}"' not in code)
    assert unread == [], f"{logical_id} sets {unread}, which functions/{binary} never reads"


def test_the_trades_event_source_is_tuned_as_the_latency_budget_says() -> None:
    """The concurrency knobs are parameters whose defaults docs/trades.md reasons about; batches
    go out as soon as a poll brings records (no batching window); failures are per record."""
    fn = resources()["TradesStreamFunction"]["Properties"]
    source = fn["Events"]["Trades"]["Properties"]
    assert source["ParallelizationFactor"] == {"Ref": "TradesParallelizationFactor"}
    assert source["MaximumBatchingWindowInSeconds"] == 0
    assert source["BatchSize"] == 10000
    assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert fn["Environment"]["Variables"]["STORE_CONCURRENCY"] == {"Ref": "TradesStoreConcurrency"}
    params = template()["Parameters"]
    factor = params["TradesParallelizationFactor"]
    concurrency = params["TradesStoreConcurrency"]
    assert (factor["MinValue"], factor["MaxValue"]) == (1, 10)
    assert (concurrency["MinValue"], concurrency["MaxValue"]) == (1, 512)
    doc = (ROOT / "docs" / "trades.md").read_text(encoding="utf-8")
    assert f"`TradesParallelizationFactor` (default {factor['Default']})" in doc
    assert f"`TradesStoreConcurrency` (default {concurrency['Default']})" in doc
    # Room for every shard's batches at the default factor, when reserved: ≥ factor × 10 shards.
    condition, reserved, otherwise = fn["ReservedConcurrentExecutions"]["Fn::If"]
    assert (condition, otherwise) == ("ReservesConcurrency", {"Ref": "AWS::NoValue"})
    assert reserved >= factor["Default"] * 10


# --- a first deploy that succeeds ------------------------------------------------------------


def test_reserved_concurrency_is_opt_in_so_a_new_account_quota_suffices() -> None:
    """New accounts often have a concurrency quota of 10 or 50 and Lambda keeps 100 unreserved:
    no function reserves any unless ReserveConcurrency=true."""
    assert template()["Parameters"]["ReserveConcurrency"]["Default"] == "false"
    assert template()["Conditions"]["ReservesConcurrency"] == {"Fn::Equals": [{"Ref": "ReserveConcurrency"}, "true"]}
    reserved = {name: fn["Properties"].get("ReservedConcurrentExecutions") for name, fn in functions().items()}
    for name, value in reserved.items():
        assert value is not None and value["Fn::If"][0] == "ReservesConcurrency", name
        assert value["Fn::If"][2] == {"Ref": "AWS::NoValue"}, name
    assert sum(v["Fn::If"][1] for v in reserved.values()) == 61


def test_retained_resources_are_deleted_when_the_first_create_fails() -> None:
    """A failed first create rolls back completely (RetainExceptOnCreate), so the retry does not
    meet retained, fixed-name resources; after a successful create they are kept."""
    for name, res in resources().items():
        assert res.get("DeletionPolicy") != "Retain", f"{name}: Retain blocks a retried first create"
    kept = {name for name, res in resources().items() if res.get("DeletionPolicy") == "RetainExceptOnCreate"}
    assert {"LakeKey", "LakeBucket", "AccessLogsBucket", "PiiSaltSecret", "PortfoliosTable", "TradeDecisionsTable", "RedshiftNamespace"} <= kept


def test_glue_databases_are_per_environment_and_grant_nothing_to_iam_by_default() -> None:
    dbs = {r["Properties"]["DatabaseInput"]["Name"]["Fn::Sub"]: r["Properties"]["DatabaseInput"] for r in resources("AWS::Glue::Database").values()}
    assert set(dbs) == {"energy_raw_db_${EnvironmentName}", "energy_processed_db_${EnvironmentName}"}
    for name, db in dbs.items():
        assert db["CreateTableDefaultPermissions"] == [], name
    # The environment name is a valid part of an SQL identifier.
    assert template()["Parameters"]["EnvironmentName"]["AllowedPattern"] == "^[a-z][a-z0-9]{1,11}$"


# --- audit -----------------------------------------------------------------------------------


def test_the_trail_records_the_lake_and_the_functions_validated_encrypted_and_to_cloudwatch() -> None:
    [(name, trail)] = resources("AWS::CloudTrail::Trail").items()
    props = trail["Properties"]
    assert trail["Condition"] == "CreatesTrail"
    assert template()["Conditions"]["CreatesTrail"] == {"Fn::Equals": [{"Ref": "ExistingTrailName"}, ""]}
    assert props["EnableLogFileValidation"] is True and props["IsLogging"] is True
    assert props["IsMultiRegionTrail"] is True and props["IncludeGlobalServiceEvents"] is True
    assert props["KMSKeyId"] == {"Fn::GetAtt": ["LakeKey", "Arn"]}
    assert props["CloudWatchLogsLogGroupArn"] == {"Fn::GetAtt": ["TrailLogGroup", "Arn"]}
    selectors = {s["Name"]: {f["Field"]: f for f in s["FieldSelectors"]} for s in props["AdvancedEventSelectors"]}
    assert any(s["eventCategory"]["Equals"] == ["Management"] for s in selectors.values())
    s3 = next(s for s in selectors.values() if s.get("resources.type", {}).get("Equals") == ["AWS::S3::Object"])
    assert s3["eventCategory"]["Equals"] == ["Data"]
    assert s3["resources.ARN"]["StartsWith"] == [{"Fn::Sub": "${LakeBucket.Arn}/"}]
    fns = next(s for s in selectors.values() if s.get("resources.type", {}).get("Equals") == ["AWS::Lambda::Function"])
    recorded = {r["Fn::GetAtt"][0] for r in fns["resources.ARN"]["Equals"]}
    assert recorded == set(functions()), f"{name} does not record every function's invocations"


def test_the_trail_bucket_locks_versions_and_refuses_plain_http() -> None:
    bucket = resources()["TrailBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    lock = bucket["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": {"Ref": "AuditRetentionDays"}}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    policy = resources()["TrailBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in policy if s["Effect"] == "Deny"]
    assert [s["Condition"] for s in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
    # CloudTrail writes only for this trail (confused-deputy condition).
    for s in policy:
        if s["Effect"] == "Allow":
            assert s["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
            assert "aws:SourceArn" in s["Condition"]["StringEquals"]


AUDIT_ALARMS = {
    # metric → what its filter must name
    "LakeAccessDenied": ["AccessDenied", "${LakeBucket}", "${LakeKey.Arn}"],
    "LakeBucketPolicyChanged": ["PutBucketPolicy", "DeleteBucketPolicy", "${LakeBucket}"],
    "LakeKeyDisabledOrScheduledForDeletion": ["DisableKey", "ScheduleKeyDeletion", "${LakeKey.Arn}"],
    "LakeFormationPermissionsChanged": ["lakeformation.amazonaws.com", "GrantPermissions", "RevokePermissions", "PutDataLakeSettings"],
    "RootAccountUsed": ['$.userIdentity.type = "Root"', "invokedBy NOT EXISTS"],
}


@pytest.mark.parametrize("metric", sorted(AUDIT_ALARMS))
def test_each_audit_finding_has_a_metric_filter_and_an_alarm_to_the_topic(metric: str) -> None:
    filters = [r["Properties"] for r in resources("AWS::Logs::MetricFilter").values() if r["Properties"]["MetricTransformations"][0]["MetricName"] == metric]
    assert len(filters) == 1, metric
    pattern = filters[0]["FilterPattern"]["Fn::Sub"]
    for needle in AUDIT_ALARMS[metric]:
        assert needle in pattern, f"{metric}: {needle} not in {pattern}"
    assert pattern.count("(") == pattern.count(")") and pattern.startswith("{") and pattern.endswith("}")
    assert filters[0]["LogGroupName"] == {"Fn::If": ["CreatesTrail", {"Ref": "TrailLogGroup"}, {"Ref": "ExistingTrailLogGroupName"}]}
    alarms = [r for r in resources("AWS::CloudWatch::Alarm").values() if r["Properties"].get("MetricName") == metric]
    assert len(alarms) == 1 and alarms[0]["Condition"] == "WatchesAudit"
    assert alarms[0]["Properties"]["AlarmActions"] == [{"Ref": "NotificationTopic"}]
    assert alarms[0]["Properties"]["Threshold"] == 1


def test_the_key_lets_only_this_trail_encrypt_log_files() -> None:
    key = resources()["LakeKey"]["Properties"]["KeyPolicy"]["Statement"]
    trail = [s for s in key if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}]
    assert {s["Sid"] for s in trail} == {"CloudTrailEncryptsLogFiles", "CloudTrailDescribesKey"}
    for s in trail:
        assert s["Condition"]["StringEquals"]["aws:SourceArn"] == {
            "Fn::Sub": "arn:${AWS::Partition}:cloudtrail:${AWS::Region}:${AWS::AccountId}:trail/lago-${EnvironmentName}"
        }


# --- network restriction ---------------------------------------------------------------------

NO_VALUE = {"Ref": "AWS::NoValue"}
NETWORK_CONDITION = {
    "NotIpAddress": {"Fn::If": ["HasSourceCidrs", {"aws:SourceIp": {"Ref": "AllowedSourceCidrs"}}, NO_VALUE]},
    "StringNotEqualsIfExists": {"Fn::If": ["HasVpcEndpoints", {"aws:SourceVpce": {"Ref": "AllowedVpcEndpointIds"}}, NO_VALUE]},
}


def _conditional_statement(statements: list[Any], sid: str) -> dict[str, Any]:
    [found] = [s["Fn::If"] for s in statements if isinstance(s, dict) and "Fn::If" in s and s["Fn::If"][1].get("Sid") == sid]
    condition, statement, otherwise = found
    # Only with a network parameter: with none set the stack deploys and works as before.
    assert (condition, otherwise) == ("RestrictsNetwork", NO_VALUE)
    return statement


def _roles_named(values: list[Any]) -> set[str]:
    names = set()
    for v in values:
        if "Fn::If" in v:
            v = v["Fn::If"][1]
        names.add(v["Fn::GetAtt"][0])
    return names


def test_the_lake_denies_data_access_from_other_networks_except_the_stacks_roles_and_aws_services() -> None:
    params = template()["Parameters"]
    assert params["AllowedSourceCidrs"]["Default"] == "" and params["AllowedVpcEndpointIds"]["Default"] == ""
    statements = resources()["LakeBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = _conditional_statement(statements, "DenyDataAccessFromOtherNetworks")
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= set(deny["Action"])
    condition = deny["Condition"]
    assert {k: condition[k] for k in NETWORK_CONDITION} == NETWORK_CONDITION
    assert condition["BoolIfExists"] == {"aws:ViaAWSService": "false", "aws:PrincipalIsAWSService": "false"}
    # Exactly the roles whose policies reach the lake bucket are exempt: none more.
    exempt = _roles_named(condition["ArnNotLike"]["aws:PrincipalArn"])
    touching = {
        name
        for name, res in resources("AWS::IAM::Role").items()
        if "LakeBucket" in json.dumps(res["Properties"].get("Policies", []))
    }
    assert exempt == touching


def test_the_producer_policy_denies_puts_from_other_networks() -> None:
    statements = resources()["TradesProducerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = _conditional_statement(statements, "DenyPutsFromOtherNetworks")
    assert deny["Effect"] == "Deny"
    assert set(deny["Action"]) == {"kinesis:PutRecord", "kinesis:PutRecords"}
    assert {k: deny["Condition"][k] for k in NETWORK_CONDITION} == NETWORK_CONDITION


# --- stores: TLS only, the salt, raw PII retention -------------------------------------------


def test_every_queue_refuses_plain_http() -> None:
    queues = set(resources("AWS::SQS::Queue"))
    covered = set()
    for policy in resources("AWS::SQS::QueuePolicy").values():
        props = policy["Properties"]
        denies = [s for s in props["PolicyDocument"]["Statement"] if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}]
        if denies:
            covered |= {q["Ref"] for q in props["Queues"]}
    assert covered == queues


def test_only_the_transform_may_read_the_pii_salt() -> None:
    [policy] = [r["Properties"] for r in resources("AWS::SecretsManager::ResourcePolicy").values() if r["Properties"]["SecretId"] == {"Ref": "PiiSaltSecret"}]
    assert policy["BlockPublicPolicy"] is True
    [deny] = policy["ResourcePolicy"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "secretsmanager:GetSecretValue")
    assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["TransformRole", "Arn"]}}}


@pytest.mark.parametrize(
    ("parameter", "condition", "prefix"),
    [("RawClientesRetentionDays", "ExpiresRawClientes", "raw/clientes/"), ("RejectedRetentionDays", "ExpiresRejected", "rejected/")],
)
def test_raw_pii_can_be_expired_by_parameter(parameter: str, condition: str, prefix: str) -> None:
    assert template()["Parameters"][parameter]["Default"] == 0  # kept unless asked
    assert template()["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
    rules = resources()["LakeBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    [rule] = [r["Fn::If"] for r in rules if "Fn::If" in r and r["Fn::If"][0] == condition]
    assert rule[1]["Prefix"] == prefix and rule[1]["ExpirationInDays"] == {"Ref": parameter}
    assert rule[2] == NO_VALUE


# --- the warehouse: only the stack's own workgroup, and the route COPY needs -----------------


def test_the_loader_may_use_only_its_own_workgroup() -> None:
    role = resources()["RedshiftLoadRole"]["Properties"]["Policies"]
    assert "workgroup/*" not in json.dumps(role)
    existing = {"Fn::Sub": "arn:${AWS::Partition}:redshift-serverless:${AWS::Region}:${AWS::AccountId}:workgroup/${RedshiftWorkgroupId}"}
    serverless = [s["Fn::If"][1] for s in role[0]["PolicyDocument"]["Statement"] if "Fn::If" in s and s["Fn::If"][0] == "UsesServerless"]
    assert {s["Sid"] for s in serverless} == {"RunStatementsOnTheWorkgroup", "WorkgroupCredentials"}
    for s in serverless:
        assert s["Resource"] == {"Fn::If": ["CreatesServerless", {"Fn::GetAtt": ["RedshiftWorkgroup", "Workgroup.WorkgroupArn"]}, existing]}
    env = resources()["RedshiftLoadFunction"]["Properties"]["Environment"]["Variables"]["REDSHIFT_WORKGROUP"]
    assert existing in env["Fn::If"][2]["Fn::If"]


def test_enhanced_vpc_routing_gets_its_s3_gateway_endpoint() -> None:
    workgroup = resources()["RedshiftWorkgroup"]["Properties"]
    assert workgroup["EnhancedVpcRouting"] is True and workgroup["PubliclyAccessible"] is False
    endpoint = resources()["S3GatewayEndpoint"]
    assert endpoint["Condition"] == "CreatesS3GatewayEndpoint"
    props = endpoint["Properties"]
    assert props["VpcEndpointType"] == "Gateway"
    assert props["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    assert (props["VpcId"], props["RouteTableIds"]) == ({"Ref": "RedshiftVpcId"}, {"Ref": "RedshiftRouteTableIds"})
    rule = template()["Rules"]["S3GatewayEndpointNeedsTheVpc"]
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "RedshiftVpcId"}, ""]}]}


def test_lake_formation_governs_and_serves_only_the_processed_zone() -> None:
    processed = {"Fn::Sub": "${LakeBucket.Arn}/processed"}
    assert resources()["LakeLocation"]["Properties"]["ResourceArn"] == processed
    location = resources()["CrawlerLocationPermission"]["Properties"]["Resource"]["DataLocation"]
    assert location["ResourceArn"] == processed
    statements = resources()["LakeFormationDataAccessRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    reads = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert [s["Resource"] for s in reads] == [{"Fn::Sub": "${LakeBucket.Arn}/processed/*"}]
    [listing] = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["processed/*"]}}
    assert not any(s["Effect"] == "Allow" and "s3:PutObject" in json.dumps(s["Action"]) for s in statements)


def test_the_pipeline_is_granted_the_processed_tables_one_by_one() -> None:
    """No TableWildcard on the processed database: the crawlers get the four declared tables, the
    trades-history state machine its one table."""
    grants = [r["Properties"] for r in resources("AWS::LakeFormation::PrincipalPermissions").values()]
    on_processed = [g for g in grants if g["Resource"].get("Table", {}).get("DatabaseName") == {"Ref": "ProcessedDatabase"}]
    assert on_processed and all("TableWildcard" not in g["Resource"]["Table"] for g in on_processed)
    crawler = {g["Resource"]["Table"]["Name"]["Ref"] for g in on_processed if g["Principal"]["DataLakePrincipalIdentifier"] == {"Fn::GetAtt": ["CrawlerRole", "Arn"]}}
    assert crawler == {"ClientesTable", "ProveedoresTable", "TransaccionesTable", "TrmTable"}


# --- the lake key: administration apart from use ---------------------------------------------

ACCOUNT_ROOT = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
# What reads or writes data with a key, or hands its use to someone else (a grant).
KEY_USE = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:Sign",
    "kms:Verify",
    "kms:DeriveSharedSecret",
    "kms:CreateGrant",
)
LAKE_KEY = {"Fn::GetAtt": ["LakeKey", "Arn"]}
# Role statements that may use the lake key without kms:ViaService, each with its reason. None
# today: every principal of the stack reaches the key through the service that keeps the data.
DIRECT_KEY_USE: dict[tuple[str, str], str] = {}


def _key_use(actions: Any) -> set[str]:
    """The key-use actions an Action element allows, its wildcards expanded (IAM ignores case)."""
    return {use for a in _as_list(actions) for use in KEY_USE if fnmatch.fnmatch(use.lower(), a.lower())}


def _pick(value: Any, branch: int) -> Any:
    """`value` with every Fn::If resolved to one side (1: condition true, 2: false) and
    AWS::NoValue removed; other intrinsics are left as written."""
    if isinstance(value, list):
        return [v for v in (_pick(v, branch) for v in value) if v != NO_VALUE]
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            return _pick(value["Fn::If"][branch], branch)
        return {k: v for k, v in ((k, _pick(v, branch)) for k, v in value.items()) if v != NO_VALUE}
    return value


def _key_policy(branch: int) -> list[dict[str, Any]]:
    return _pick(resources()["LakeKey"]["Properties"]["KeyPolicy"]["Statement"], branch)


def _service(value: Any) -> str:
    """`s3` of {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}: only this region's endpoints."""
    m = re.fullmatch(r"([a-z0-9-]+)\.\$\{AWS::Region\}\.amazonaws\.com", value.get("Fn::Sub", "") if isinstance(value, dict) else "")
    assert m, f"kms:ViaService {value!r} is not a service of this region"
    return m.group(1)


def _via_services(statement: dict[str, Any]) -> list[Any]:
    return _as_list(statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService", []))


def _key_policy_services() -> dict[str, str | None]:
    """Service → the condition it is listed under in the key policy (None: always)."""
    [use] = [s for s in resources()["LakeKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "KeyUseThroughTheStacksServices"]
    services = {}
    for v in _via_services(use):
        condition, v = (v["Fn::If"][0], v["Fn::If"][1]) if "Fn::If" in v else (None, v)
        services[_service(v)] = condition
    return services


def _role_key_statements() -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    """(role or managed policy, the condition it exists under, statement) for every identity
    statement that allows a kms action on the lake key."""
    for name, res in resources().items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif res["Type"] == "AWS::IAM::ManagedPolicy":
            documents = [props["PolicyDocument"]]
        else:
            continue
        for doc in documents:
            for s in doc["Statement"]:
                condition = res.get("Condition")
                if "Fn::If" in s:
                    condition, s = s["Fn::If"][0], s["Fn::If"][1]
                if s["Effect"] == "Allow" and LAKE_KEY in _as_list(s["Resource"]) and any(a.startswith("kms:") for a in _as_list(s["Action"])):
                    yield name, condition, s


def test_the_use_actions_are_recognised_behind_wildcards() -> None:
    """The checks below can fail: kms:* and kms:Create* are use (CreateGrant hands it out)."""
    assert _key_use("kms:*") == set(KEY_USE)
    assert _key_use(["kms:Create*", "kms:Describe*"]) == {"kms:CreateGrant"}
    assert _key_use(["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"]) == set()


def test_key_administration_holds_no_cryptographic_action_and_keeps_the_key_manageable() -> None:
    [admin] = [s for s in resources()["LakeKey"]["Properties"]["KeyPolicy"]["Statement"] if s["Sid"] == "KeyAdministration"]
    assert admin["Effect"] == "Allow" and admin["Principal"] == ACCOUNT_ROOT
    assert _key_use(admin["Action"]) == set(), "key administration must not read, write or grant"
    # Unconditional, and enough for CloudFormation and an administrator to update, rotate,
    # disable and delete it: a key nobody can manage cannot be fixed.
    assert "Condition" not in admin
    manage = {"kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:DisableKey", "kms:TagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"}
    assert manage <= set(admin["Action"]), manage - set(admin["Action"])


@pytest.mark.parametrize("branch", [1, 2], ids=["conditions-true", "conditions-false"])
def test_the_key_policy_lets_the_account_use_the_key_only_through_a_service(branch: int) -> None:
    """No statement for the account (what IAM policies may then grant) allows a use action
    without kms:ViaService; grants only for AWS resources. Service principals (CloudWatch Logs,
    CloudTrail, …) have statements of their own, scoped by encryption context or source."""
    statements = _key_policy(branch)
    for s in statements:
        if s["Effect"] != "Allow":
            continue
        if "AWS" not in s["Principal"]:
            assert set(s["Principal"]) == {"Service"} and "Condition" in s, f"{s['Sid']}: a service principal without a condition"
            continue
        assert s["Principal"] == ACCOUNT_ROOT, f"{s['Sid']}: only the account is named, IAM decides within it"
        use = _key_use(s["Action"])
        if not use:
            continue
        via = _via_services(s)
        assert via, f"{s['Sid']}: {sorted(use)} without kms:ViaService"
        assert set(s["Condition"]) <= {"StringEquals", "Bool"}, f"{s['Sid']}: {s['Condition']}"
        assert all(_service(v) for v in via)
        if "kms:CreateGrant" in use:
            assert s["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}, s["Sid"]
    assert any(_key_use(s["Action"]) and "AWS" in s["Principal"] for s in statements)


def test_every_role_uses_the_key_only_through_a_service_the_key_policy_allows() -> None:
    """A role cannot use the key directly: each of its kms statements names the services that
    use the key for it, and each of those is one the key policy lets the account use it through
    (under the same condition), or the role would be denied."""
    allowed = _key_policy_services()
    checked = set()
    for name, condition, s in _role_key_statements():
        checked.add(name)
        if (name, s.get("Sid")) in DIRECT_KEY_USE:
            continue
        via = _via_services(s)
        assert via, f"{name} {s.get('Sid')}: {s['Action']} on the lake key without kms:ViaService"
        for v in via:
            service = _service(v)
            assert service in allowed, f"{name} {s['Sid']}: the key policy does not allow use through {service}"
            assert allowed[service] in (None, condition), f"{name} {s['Sid']}: {service} is allowed only with {allowed[service]}"
        if "kms:CreateGrant" in _as_list(s["Action"]):
            assert s["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}, f"{name} {s['Sid']}"
    assert {"TransformRole", "TradesStreamRole", "TradesProducerPolicy", "CrawlerRole", "RedshiftCopyRole"} <= checked


def test_every_function_role_may_decrypt_the_functions_environment_variables() -> None:
    """Lambda decrypts environment variables encrypted with a customer key using the function's
    role, through lambda.<region>: a role without it fails every cold start."""
    through_lambda = {
        (name, condition)
        for name, condition, s in _role_key_statements()
        if "kms:Decrypt" in _as_list(s["Action"]) and "lambda" in {_service(v) for v in _via_services(s)}
    }
    for name, fn in functions().items():
        props = fn["Properties"]
        if props.get("KmsKeyArn") == LAKE_KEY and props.get("Environment"):
            role = props["Role"]["Fn::GetAtt"][0]
            assert (role, None) in through_lambda, f"{name}: {role} may not decrypt its environment variables"


# Resources that name the lake key, by what the key does there. A store's service must be in the
# key policy; a new kind of resource naming the key must be placed here, which makes it reviewed.
KEY_SERVICES_OF = {
    "AWS::S3::Bucket": {"s3"},
    "AWS::Kinesis::Stream": {"kinesis"},
    "AWS::DynamoDB::Table": {"dynamodb"},
    "AWS::SQS::Queue": {"sqs"},
    "AWS::SNS::Topic": {"sns"},
    "AWS::SecretsManager::Secret": {"secretsmanager"},
    "AWS::Serverless::Function": {"lambda"},  # environment variables
    "AWS::Glue::SecurityConfiguration": {"glue"},
    # The namespace, the Data API's statements and results, the admin password's secret.
    "AWS::RedshiftServerless::Namespace": {"redshift-serverless", "redshift-data", "secretsmanager"},
}
KEY_NAMED_WITHOUT_AN_IAM_USE = {
    "AWS::KMS::Alias": "its name",
    "AWS::IAM::Role": "its policies: checked above",
    "AWS::IAM::ManagedPolicy": "its policy: checked above",
    "AWS::S3::BucketPolicy": "refuses objects under any other key",
    "AWS::Logs::MetricFilter": "watches denied requests on the key",
    "AWS::Logs::LogGroup": "CloudWatch Logs, under its own key-policy statement",
    "AWS::CloudTrail::Trail": "CloudTrail, under its own key-policy statements",
    "AWS::Serverless::StateMachine": "hands the key to SageMaker's training job, which uses it with SageMakerRole",
}


def test_the_key_policy_lists_exactly_the_services_that_keep_the_stacks_data() -> None:
    allowed = _key_policy_services()
    users: dict[str, set[str | None]] = {}
    for name, condition, s in _role_key_statements():
        for v in _via_services(s):
            users.setdefault(_service(v), set()).add(condition)
    for name, res in resources().items():
        if name == "LakeKey" or not re.search(r'"LakeKey"|\$\{LakeKey(\.Arn)?\}', json.dumps(res.get("Properties", {}))):
            continue
        kind = res["Type"]
        assert kind in KEY_SERVICES_OF or kind in KEY_NAMED_WITHOUT_AN_IAM_USE, f"{name} ({kind}) names the key: classify it"
        for service in KEY_SERVICES_OF.get(kind, ()):
            users.setdefault(service, set()).add(res.get("Condition"))
            assert service in allowed, f"{name} keeps data under the key through {service}, which the key policy does not allow"
            assert allowed[service] in (None, res.get("Condition")), f"{name}: {service} is allowed only with {allowed[service]}"
    for service, condition in allowed.items():
        assert condition in users.get(service, set()), f"the key policy allows {service} (condition {condition}) with no store or role using it"


# --- logs: every group the stack writes to is declared, with retention and the key -------------

# Groups the stack's principals write to that it cannot own, each with its reason (docs/deploy.md
# says how to give them a retention).
SHARED_LOG_GROUPS = {
    "/aws/sagemaker/TrainingJobs": "every training job of the account and region logs there; one environment's stack cannot own it",
    "/aws/sagemaker/Endpoints/*": "the endpoint (SageMakerEndpointName) and its group belong to whoever created it; the stack only moves it to new models",
}
# Kinds that would write to a log group of their own making, which the check below does not read yet.
UNREAD_LOG_WRITERS = {"AWS::Lambda::Function", "AWS::StepFunctions::StateMachine", "AWS::Glue::Job", "AWS::Redshift::Cluster", "AWS::CodeBuild::Project"}


def _sub_text(value: Any) -> str:
    return value["Fn::Sub"] if isinstance(value, dict) else value


def _log_groups_written() -> Iterator[tuple[str, str | None, str]]:
    """(writer, its condition, log group) for every resource that logs to CloudWatch Logs: the
    group's logical id where the writer names one, else the name AWS creates (as a Fn::Sub)."""
    for name, res in resources().items():
        props, kind, condition = res.get("Properties", {}), res["Type"], res.get("Condition")
        assert kind not in UNREAD_LOG_WRITERS, f"{name}: teach _log_groups_written where {kind} logs"
        if kind == "AWS::Serverless::Function":
            group = props.get("LoggingConfig", {}).get("LogGroup")
            yield name, condition, group["Ref"] if group else f"/aws/lambda/{_sub_text(props['FunctionName'])}"
        elif kind == "AWS::Serverless::StateMachine":
            for d in props.get("Logging", {}).get("Destinations", []):
                yield name, condition, d["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        elif kind == "AWS::CloudTrail::Trail" and "CloudWatchLogsLogGroupArn" in props:
            yield name, condition, props["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]
        elif kind == "AWS::Glue::Crawler":
            # With a security configuration Glue logs to a group per role and configuration.
            security = props.get("CrawlerSecurityConfiguration")
            role = props["Role"]["Fn::GetAtt"][0]
            yield name, condition, f"/aws-glue/crawlers-role/${{{role}}}-${{{security['Ref']}}}" if security else "/aws-glue/crawlers"
        elif kind == "AWS::RedshiftServerless::Namespace":
            for log in props.get("LogExports", []):
                yield name, condition, f"/aws/redshift/{_sub_text(props['NamespaceName'])}/{log}"


def _declared_log_groups() -> dict[str, str]:
    """LogGroupName (as written) → logical id."""
    return {_sub_text(r["Properties"]["LogGroupName"]): n for n, r in resources("AWS::Logs::LogGroup").items()}


def test_every_log_group_the_stack_writes_to_is_declared_with_retention_and_the_key() -> None:
    groups = resources("AWS::Logs::LogGroup")
    named = _declared_log_groups()
    writers = list(_log_groups_written())
    assert {w for w, _, _ in writers} >= set(functions()) | {"Trail", "RawClientesCrawler", "RedshiftNamespace"}
    for writer, condition, group in writers:
        logical = group if group in groups else named.get(group)
        assert logical, f"{writer} writes to {group}, which the stack does not declare (AWS would create it without retention)"
        declared = groups[logical]
        assert declared["Properties"]["RetentionInDays"] == {"Ref": "RetentionDays"}, logical
        assert declared["Properties"]["KmsKeyId"] == LAKE_KEY, logical
        # Present whenever its writer is: same condition, or none.
        assert declared.get("Condition") in (None, condition), f"{logical} exists only with {declared.get('Condition')}, {writer} with {condition}"
    # …and created before its writer could make it (Redshift and Glue create a missing group).
    for writer, _, group in writers:
        if resources()[writer]["Type"] in ("AWS::Glue::Crawler", "AWS::RedshiftServerless::Namespace"):
            assert named[group] in _as_list(resources()[writer].get("DependsOn", [])), f"{writer} may start before {named[group]}"


def _log_group_of(resource_arn: Any) -> str:
    """The log group an ARN in a policy names: the logical id of `${X.Arn}:*`, else its name."""
    text = _sub_text(resource_arn)
    m = re.fullmatch(r"\$\{(\w+)\.Arn\}:\*", text)
    if m:
        return m.group(1)
    m = re.fullmatch(r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}:log-group:([^:]+)(:\*|:log-stream:\*)?", text)
    assert m, f"not a log group ARN: {text}"
    return m.group(1)


def _as_a_policy_names_it(name: str) -> str:
    """A declared LogGroupName as a role's policy can name it: a role's generated name (which its
    own policy cannot refer to) becomes `*`, a Glue security configuration its name."""
    def one(m: re.Match[str]) -> str:
        res = resources().get(m.group(1))
        if res and res["Type"] == "AWS::IAM::Role":
            return "*"
        if res and res["Type"] == "AWS::Glue::SecurityConfiguration":
            return _sub_text(res["Properties"]["Name"])
        return m.group(0)

    return re.sub(r"\$\{(\w+)\}", one, name)


def test_roles_write_only_to_declared_log_groups_or_named_shared_ones() -> None:
    declared = set(resources("AWS::Logs::LogGroup"))
    names = {_as_a_policy_names_it(n) for n in _declared_log_groups()}
    for name, s in policy_statements():
        if s["Effect"] == "Allow" and "logs:PutLogEvents" in _as_list(s["Action"]):
            for arn in _as_list(s["Resource"]):
                group = _log_group_of(arn)
                assert group in declared or group in names or group in SHARED_LOG_GROUPS, f"{name} {s.get('Sid')} writes to {group}"


def test_the_crawlers_may_write_only_to_their_own_log_group() -> None:
    [own] = [_as_a_policy_names_it(n) for n, logical in _declared_log_groups().items() if logical == "CrawlerLogGroup"]
    statements = [s for name, s in policy_statements() if name == "CrawlerRole" and any(a.startswith("logs:") for a in _as_list(s["Action"]))]
    assert {a for s in statements for a in _as_list(s["Action"])} == {"logs:CreateLogGroup", "logs:AssociateKmsKey", "logs:CreateLogStream", "logs:PutLogEvents"}
    for s in statements:
        for arn in _as_list(s["Resource"]):
            assert _log_group_of(arn) == own, f"CrawlerRole {s['Sid']}: {_sub_text(arn)}"
    # Every crawler logs there: one role, one security configuration.
    crawlers = resources("AWS::Glue::Crawler").values()
    assert {(c["Properties"]["Role"]["Fn::GetAtt"][0], c["Properties"]["CrawlerSecurityConfiguration"]["Ref"]) for c in crawlers} == {("CrawlerRole", "GlueSecurityConfiguration")}


# --- the deploy guide ------------------------------------------------------------------------

DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"


def _guide_section(heading: str) -> str:
    """From `heading` to the next heading of the same or a higher level."""
    text = DEPLOY_GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + 1
    level = len(heading.split(" ")[0])
    following = re.compile(rf"(?m)^#{{1,{level}}} ").search(text, start + len(heading))
    return text[start : following.start() if following else len(text)]


def test_the_deploy_guide_explains_every_parameter_in_the_order_sam_asks_for_it() -> None:
    """`sam deploy --guided` asks for the parameters in the template's order: the guide's table
    has one row per parameter, in that order, with its default."""
    section = _guide_section("### The parameters, in the order the guided deploy asks for them")
    rows = re.findall(r"(?m)^\| `(\w+)` \| ([^|]*) \|", section)
    params = template()["Parameters"]
    assert [name for name, _ in rows] == list(params)
    for name, default in rows:
        expected = str(params[name].get("Default", ""))
        shown = default.strip()
        assert (shown == "empty") if expected == "" else (shown == f"`{expected}`"), f"{name}: the guide shows {shown}, the template {expected!r}"


def test_both_failure_queues_can_be_redriven_by_the_function_that_failed() -> None:
    """The landing DLQ and the stream's failure queue are read (and what went through deleted)
    by the function that writes them, which is told where they are; nothing else may."""
    for role, function, sid, queue, variable in (
        ("S3LandingRole", "S3LandingFunction", "RedriveDlq", "LandingDlq", "LANDING_DLQ_URL"),
        ("TradesStreamRole", "TradesStreamFunction", "RedriveFailedBatches", "TradesStreamFailureQueue", "STREAM_FAILURE_QUEUE_URL"),
    ):
        statement = _statement(role, sid)
        assert sorted(_as_list(statement["Action"])) == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]
        assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
        variables = resources()[function]["Properties"]["Environment"]["Variables"]
        assert variables[variable] == {"Ref": queue}
        readers = [
            name
            for name, s in policy_statements()
            if s.get("Effect") == "Allow"
            and "sqs:ReceiveMessage" in _as_list(s.get("Action"))
            and {"Fn::GetAtt": [queue, "Arn"]} in _as_list(s.get("Resource"))
        ]
        assert readers == [role], f"{queue} is read by {readers}"
    # The stream's redrive reads the recorded range back: the same reads as the event source.
    reads = _as_list(_statement("TradesStreamRole", "ReadTradesStream")["Action"])
    assert {"kinesis:GetShardIterator", "kinesis:GetRecords"} <= set(reads)


def test_the_event_source_gives_up_while_the_stream_still_holds_the_batch() -> None:
    """A failing batch is retried until its records are TradesMaxRecordAgeSeconds old, then
    recorded: by default with (168 h − 6 h) left to redrive it, and the function knows the
    retention to report the time left."""
    params = template()["Parameters"]
    stream = resources()["TradesStream"]["Properties"]
    assert stream["RetentionPeriodHours"] == {"Ref": "TradesStreamRetentionHours"}
    source = resources()["TradesStreamFunction"]["Properties"]["Events"]["Trades"]["Properties"]
    assert source["MaximumRecordAgeInSeconds"] == {"Ref": "TradesMaxRecordAgeSeconds"}
    assert source["MaximumRetryAttempts"] == -1
    assert source["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["TradesStreamFailureQueue", "Arn"]}
    assert params["TradesMaxRecordAgeSeconds"]["Default"] < params["TradesStreamRetentionHours"]["Default"] * 3600 / 2
    assert params["TradesMaxRecordAgeSeconds"]["MaxValue"] <= 604800  # the event source's own limit
    variables = resources()["TradesStreamFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["STREAM_RETENTION_HOURS"] == {"Ref": "TradesStreamRetentionHours"}
    # The alarm on the failure queue says how long the stream keeps the records.
    alarm = resources()["TradesStreamFailuresDepthAlarm"]["Properties"]["AlarmDescription"]["Fn::Sub"]
    assert "${TradesStreamRetentionHours}" in alarm and "redrive" in alarm


def test_files_reach_the_catalog_without_a_crawler_on_their_path() -> None:
    """The ingest state machine registers each file's partition through the transform (which may
    add partitions to the four declared tables, nothing else) and never starts or polls a
    crawler; the processed crawlers run only on their optional schedule, for schema drift."""
    asl = (STATEMACHINES / "ingest.asl.json").read_text(encoding="utf-8")
    assert "StartCrawlerFunctionArn" not in asl and "Crawler" not in asl
    machine = resources()["IngestStateMachine"]["Properties"]
    assert "StartCrawlerFunctionArn" not in machine["DefinitionSubstitutions"]
    invoked = _as_list(_statement("IngestStateMachineRole", "InvokeIngestFunctions")["Resource"])
    assert {"Fn::GetAtt": ["StartCrawlerFunction", "Arn"]} not in invoked
    register = _statement("TransformRole", "RegisterPartitions")
    assert _as_list(register["Action"]) == ["glue:BatchCreatePartition"]
    tables = sorted(r["Fn::Sub"].rsplit("/", 1)[1] for r in register["Resource"] if "table/" in r["Fn::Sub"])
    assert tables == sorted(DATASETS)
    variables = resources()["TransformFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["GLUE_DATABASE"] == {"Ref": "ProcessedDatabase"}
    # Under Lake Formation: INSERT on each declared table, one grant each, no wildcard.
    grants = [r["Properties"] for r in resources("AWS::LakeFormation::PrincipalPermissions").values()]
    transform = [g for g in grants if g["Principal"]["DataLakePrincipalIdentifier"] == {"Fn::GetAtt": ["TransformRole", "Arn"]}]
    on_tables = {g["Resource"]["Table"]["Name"]["Ref"]: g["Permissions"] for g in transform if "Table" in g["Resource"]}
    assert on_tables == {t: ["DESCRIBE", "INSERT"] for t in ("ClientesTable", "ProveedoresTable", "TransaccionesTable", "TrmTable")}
    for name, crawler in resources("AWS::Glue::Crawler").items():
        if name.startswith("Processed"):
            assert crawler["Properties"]["Schedule"]["Fn::If"][0] == "CrawlsProcessed", name
