//! The `redshift-load` function's handler: parses the task input and runs
//! [`lago::ingest::statements`]' `setup`, `submit`, `submit_tables` or `status` on the Data API
//! port.

use lago::aws::redshift::{ClusterAuth, WarehouseTarget};
use lago::ingest::statements::{
    self, DataApi, LoadTarget, LoadTask, LoadTaskError, ManifestReader, StatementState,
};
use lago::load::RedshiftCopy;
use lago::runtime::env::{ConfigError, Env};
use lago::runtime::metrics::{Emf, Unit};
use lago::runtime::{Classified, ErrorKind};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// Settings, read once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// `REDSHIFT_WORKGROUP` (Serverless) or `REDSHIFT_CLUSTER_ID` with `REDSHIFT_DB_USER` or
    /// `REDSHIFT_SECRET_ARN` (provisioned; a Serverless workgroup may use a secret too).
    pub target: WarehouseTarget,
    /// `REDSHIFT_DATABASE`.
    pub database: String,
    /// `REDSHIFT_SCHEMA` (default `energy`), `REDSHIFT_COPY_ROLE_ARN` and, when the lake is in
    /// another region than the warehouse, `LAKE_REGION`.
    pub warehouse: LoadTarget,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(&Env::from_process())
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let secret = env.optional("REDSHIFT_SECRET_ARN");
        let target = match (
            env.optional("REDSHIFT_WORKGROUP"),
            env.optional("REDSHIFT_CLUSTER_ID"),
        ) {
            (Some(workgroup), None) => WarehouseTarget::Serverless {
                workgroup,
                secret_arn: secret,
            },
            (None, Some(cluster_id)) => {
                let auth = match (env.optional("REDSHIFT_DB_USER"), secret) {
                    (Some(u), None) => ClusterAuth::DbUser(u),
                    (None, Some(s)) => ClusterAuth::SecretArn(s),
                    _ => return Err(ConfigError::OneOf("REDSHIFT_DB_USER, REDSHIFT_SECRET_ARN")),
                };
                WarehouseTarget::Cluster { cluster_id, auth }
            }
            _ => {
                return Err(ConfigError::OneOf(
                    "REDSHIFT_WORKGROUP, REDSHIFT_CLUSTER_ID",
                ))
            }
        };
        let invalid =
            |name: &'static str, value: String, e: lago::load::LoadError| ConfigError::Invalid {
                name,
                value,
                reason: e.to_string(),
            };
        let role = env.required("REDSHIFT_COPY_ROLE_ARN")?;
        let region = env.optional("LAKE_REGION");
        let copy = RedshiftCopy::new(&role, region.as_deref())
            .map_err(|e| invalid("REDSHIFT_COPY_ROLE_ARN", role.clone(), e))?;
        let schema = env
            .optional("REDSHIFT_SCHEMA")
            .unwrap_or_else(|| "energy".into());
        let warehouse = LoadTarget::redshift(&schema, copy)
            .map_err(|e| invalid("REDSHIFT_SCHEMA", schema.clone(), e))?;
        Ok(Config {
            target,
            database: env.required("REDSHIFT_DATABASE")?,
            warehouse,
        })
    }
}

pub struct Deps<D, M> {
    pub api: D,
    pub manifests: M,
    pub warehouse: LoadTarget,
}

#[derive(Debug, thiserror::Error)]
pub enum RedshiftLoadError {
    #[error("invalid task input (expected {{action: setup}}, {{action: submit, dataset, manifest}}, {{action: submit_tables, run, tables}} or {{action: status, statement_id}})")]
    Input(#[source] serde_json::Error),
    #[error(transparent)]
    Load(#[from] LoadTaskError),
    #[error("serializing the output failed")]
    Output(#[source] serde_json::Error),
}

impl Classified for RedshiftLoadError {
    fn kind(&self) -> ErrorKind {
        match self {
            RedshiftLoadError::Input(_) => ErrorKind::InvalidInput,
            RedshiftLoadError::Load(e) => e.kind(),
            RedshiftLoadError::Output(_) => ErrorKind::Internal,
        }
    }
}

/// One task: `setup`, `submit` or `status`.
pub async fn handle<D: DataApi, M: ManifestReader>(
    deps: &Deps<D, M>,
    event: LambdaEvent<Value>,
) -> Result<Value, RedshiftLoadError> {
    let task: LoadTask = serde_json::from_value(event.payload).map_err(RedshiftLoadError::Input)?;
    let started = std::time::Instant::now();
    let emf = Emf::for_function("redshift-load");
    let (out, emf) = match task {
        LoadTask::Setup => {
            let out = statements::setup(&deps.api, &deps.warehouse).await?;
            let emf = emf.metric("SetupsSubmitted", Unit::Count, 1);
            (serde_json::to_value(&out), emf)
        }
        LoadTask::Submit { dataset, manifest } => {
            let out = statements::submit(
                &deps.api,
                &deps.manifests,
                &deps.warehouse,
                dataset,
                &manifest,
            )
            .await?;
            let emf = emf
                .dimension("Dataset", dataset.name())
                .metric("LoadsSubmitted", Unit::Count, u64::from(!out.skipped))
                .metric("LoadsSkipped", Unit::Count, u64::from(out.skipped))
                .property("manifest", manifest);
            (serde_json::to_value(&out), emf)
        }
        LoadTask::SubmitTables { run, tables } => {
            let out = statements::submit_tables(&deps.api, &deps.warehouse, &run, &tables).await?;
            let emf = emf
                .dimension("Dataset", "trades")
                .metric("LoadsSubmitted", Unit::Count, u64::from(!out.skipped))
                .metric("LoadsSkipped", Unit::Count, u64::from(out.skipped))
                .property("run", run);
            (serde_json::to_value(&out), emf)
        }
        LoadTask::Status { statement_id } => {
            let out = statements::status(&deps.api, &statement_id).await?;
            let emf = emf
                .metric(
                    "LoadsFinished",
                    Unit::Count,
                    u64::from(out.state == StatementState::Finished),
                )
                .metric(
                    "LoadsFailed",
                    Unit::Count,
                    u64::from(matches!(
                        out.state,
                        StatementState::Failed | StatementState::Aborted
                    )),
                )
                .property("statement_id", statement_id);
            (serde_json::to_value(&out), emf)
        }
    };
    emf.metric(
        "Duration",
        Unit::Milliseconds,
        started.elapsed().as_millis() as u64,
    )
    .emit();
    out.map_err(RedshiftLoadError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lago::contract::Dataset;
    use lago::ingest::memory::{sample_manifest, MemoryDataApi, MemoryManifests};
    use lago::transform::{Manifest, OutputObject};
    use lambda_runtime::Context;

    const SETUP: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/redshift-load/setup.json"
    ));
    const SUBMIT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/redshift-load/submit.json"
    ));
    const STATUS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/redshift-load/status.json"
    ));

    fn config() -> anyhow::Result<Config> {
        Ok(Config::from(&Env::from_pairs(&[
            ("REDSHIFT_WORKGROUP", "lago-dev"),
            ("REDSHIFT_DATABASE", "dev"),
            (
                "REDSHIFT_COPY_ROLE_ARN",
                "arn:aws:iam::123456789012:role/lago-dev-redshift-copy",
            ),
        ]))?)
    }

    /// The manifest the sample `submit` event names, as the transform would have written it.
    fn manifest_of_the_sample() -> anyhow::Result<Manifest> {
        let ev: Value = serde_json::from_str(SUBMIT)?;
        let mut m = sample_manifest(Dataset::Clientes, 0);
        let key_of = |uri: &Value| {
            uri.as_str()
                .and_then(|u| u.strip_prefix("s3://lago-lake-dev/"))
                .map(str::to_string)
                .unwrap_or_default()
        };
        m.source.key = ev["key"].as_str().unwrap_or_default().to_string();
        m.outputs.manifest = key_of(&ev["manifest"]);
        m.outputs.processed = ev["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| OutputObject {
                key: key_of(u),
                rows: 247,
                bytes: 9000,
                checksum: None,
            })
            .collect();
        m.rows_in = 247;
        m.rows_ok = 247;
        Ok(m)
    }

    fn deps() -> anyhow::Result<Deps<MemoryDataApi, MemoryManifests>> {
        let manifests = MemoryManifests::default();
        manifests.insert("lago-lake-dev", &manifest_of_the_sample()?);
        Ok(Deps {
            api: MemoryDataApi::default(),
            manifests,
            warehouse: config()?.warehouse,
        })
    }

    fn event(json: &str) -> anyhow::Result<LambdaEvent<Value>> {
        Ok(LambdaEvent::new(
            serde_json::from_str(json)?,
            Context::default(),
        ))
    }

    #[tokio::test]
    async fn setup_then_submit_then_status() -> anyhow::Result<()> {
        let deps = deps()?;
        let setup = handle(&deps, event(SETUP)?).await?;
        assert_eq!(setup["state"], "SUBMITTED");
        let submit = handle(&deps, event(SUBMIT)?).await?;
        assert_eq!(submit["state"], "SUBMITTED");
        assert_eq!(submit["dataset"], "clientes");
        let batches = deps.api.batches();
        assert_eq!(batches.len(), 2);
        let load = &batches[1];
        assert!(load
            .iter()
            .any(|s| s.starts_with("COPY ") && s.contains("FORMAT AS PARQUET")));
        assert!(load.iter().all(|s| !s.contains("${")));
        let id = submit["statement_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        deps.api.set_state(&id, StatementState::Finished, None);
        let status = handle(
            &deps,
            LambdaEvent::new(
                serde_json::json!({"action": "status", "statement_id": id}),
                Context::default(),
            ),
        )
        .await?;
        assert_eq!(status["state"], "FINISHED");
        assert_eq!(status["error"], Value::Null);
        Ok(())
    }

    #[tokio::test]
    async fn every_sample_event_runs_through_the_handler() -> anyhow::Result<()> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/redshift-load");
        let mut n = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let body = std::fs::read_to_string(&path)?;
            let deps = deps()?;
            // The sample status names a statement this fake must know.
            let ev: Value = serde_json::from_str(&body)?;
            if ev["action"] == "status" {
                let id = deps
                    .api
                    .insert_status(lago::ingest::statements::StatementStatus {
                        state: StatementState::Started,
                        error: None,
                        sub_statements: Vec::new(),
                    });
                let mut ev = ev;
                ev["statement_id"] = Value::from(id);
                let out = handle(&deps, LambdaEvent::new(ev, Context::default())).await?;
                assert_eq!(out["state"], "STARTED");
            } else {
                let out = handle(&deps, event(&body)?).await?;
                assert!(out["statement_id"].is_string(), "{}", path.display());
            }
            n += 1;
        }
        assert!(n >= 4);
        Ok(())
    }

    #[tokio::test]
    async fn errors_carry_stable_types() -> anyhow::Result<()> {
        let deps = deps()?;
        let cases = [
            (r#"{"action":"vacuum"}"#.to_string(), "InvalidInput"),
            (
                r#"{"action":"submit","dataset":"clientes","manifest":"s3://lago-lake-dev/nope.json"}"#
                    .to_string(),
                "NotFound",
            ),
            (
                r#"{"action":"submit","dataset":"clientes","manifest":"/tmp/x.json"}"#.to_string(),
                "InvalidInput",
            ),
            (STATUS.to_string(), "NotFound"),
            (
                r#"{"action":"submit_tables","run":"r","tables":[{"table":"trades_history","parts":["s3://lago-lake-dev/raw/trades/"]}]}"#
                    .to_string(),
                "InvalidInput",
            ),
        ];
        for (body, ty) in cases {
            let Err(e) = handle(&deps, event(&body)?).await else {
                anyhow::bail!("{body} should fail");
            };
            assert_eq!(lago::runtime::diagnostic(e).error_type, ty, "{body}");
        }
        deps.api.refuse_next();
        let Err(e) = handle(&deps, event(SUBMIT)?).await else {
            anyhow::bail!("a refused batch should fail");
        };
        assert_eq!(lago::runtime::diagnostic(e).error_type, "LoadFailed");
        Ok(())
    }

    #[test]
    fn config_names_one_warehouse_target() {
        let role = (
            "REDSHIFT_COPY_ROLE_ARN",
            "arn:aws:iam::123456789012:role/copy",
        );
        let db = ("REDSHIFT_DATABASE", "dev");
        assert!(Config::from(&Env::from_pairs(&[role, db])).is_err());
        assert!(Config::from(&Env::from_pairs(&[
            role,
            db,
            ("REDSHIFT_WORKGROUP", "w"),
            ("REDSHIFT_CLUSTER_ID", "c")
        ]))
        .is_err());
        // A cluster needs a database user or a secret.
        assert!(Config::from(&Env::from_pairs(&[role, db, ("REDSHIFT_CLUSTER_ID", "c")])).is_err());
        let c = Config::from(&Env::from_pairs(&[
            role,
            db,
            ("REDSHIFT_CLUSTER_ID", "c"),
            ("REDSHIFT_DB_USER", "loader"),
        ]));
        assert!(matches!(
            c.map(|c| c.target),
            Ok(WarehouseTarget::Cluster {
                auth: ClusterAuth::DbUser(_),
                ..
            })
        ));
        // A malformed role is refused at start-up, not at the first COPY.
        assert!(Config::from(&Env::from_pairs(&[
            ("REDSHIFT_COPY_ROLE_ARN", "admin'; --"),
            db,
            ("REDSHIFT_WORKGROUP", "w")
        ]))
        .is_err());
    }
}
