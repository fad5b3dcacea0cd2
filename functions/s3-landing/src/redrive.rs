//! Redrive of the landing DLQ: each message's landing event runs again through [`land`], so
//! its executions start under the names the landing function gives them — an execution that
//! exists already (the event did get through, or a redrive ran before) is not started again.
//! `lago redrive landing` runs this same code.

use lago::ingest::landing::{
    classify, land, ExecutionStarter, IgnoreReason, InvalidRecord, LandedObject, StartError,
};
use lago::redrive::{landing_event, MessageRedrive, MessageReport, QueueMessage};
use lago::runtime::error_chain;
use serde_json::{json, Value};

use crate::objects;

/// Redrives landing-DLQ messages with `starter` (see the module docs).
pub struct LandingRedrive<'a, S> {
    pub starter: &'a S,
    /// Objects of other buckets are ignored, as the landing function ignores them.
    pub lake_bucket: Option<&'a str>,
}

impl<S: ExecutionStarter> MessageRedrive for LandingRedrive<'_, S> {
    async fn redrive(&self, message: &QueueMessage, dry_run: bool) -> MessageReport {
        let records = match landing_event(&message.body).map(objects) {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => return MessageReport::new(message, "unreadable", error_chain(&e)),
            Err(why) => return MessageReport::new(message, "unreadable", why),
        };
        if dry_run {
            return self.plan(message, records).await;
        }
        // An execution that exists is not started again: StartExecution would succeed on a
        // running one without a second run, and the report could not tell them apart.
        let mut existing = Vec::new();
        let mut pending = Vec::new();
        for record in records {
            if let Ok(obj) = &record {
                if let Ok(Execution {
                    name,
                    exists: Ok(true),
                }) = self.execution(obj).await
                {
                    existing.push(json!({"key": obj.key, "outcome": "already_started", "execution_name": name}));
                    continue;
                }
            }
            pending.push(record);
        }
        let landed = land(self.starter, self.lake_bucket, pending).await;
        let already = landed.already_started as usize + existing.len();
        // An event whose every record is unreadable would be unreadable again: kept.
        let outcome = if landed.failed > 0 {
            "failed"
        } else if landed.invalid > 0 && landed.started as usize + already == 0 {
            "unreadable"
        } else {
            "redriven"
        };
        let mut subject = existing;
        subject.extend(
            landed
                .records
                .iter()
                .filter_map(|r| serde_json::to_value(r).ok()),
        );
        MessageReport {
            subject: Value::Array(subject),
            items: landed.started.into(),
            already_done: already as u64,
            ..MessageReport::new(
                message,
                outcome,
                format!(
                    "{} started, {already} existed already, {} ignored, {} invalid, {} failed",
                    landed.started, landed.ignored, landed.invalid, landed.failed
                ),
            )
        }
    }
}

/// The execution an accepted object's landing would start, and whether it exists already.
struct Execution {
    name: String,
    exists: Result<bool, StartError>,
}

impl<S: ExecutionStarter> LandingRedrive<'_, S> {
    /// The execution `obj` lands as, or why the landing function ignores it.
    async fn execution(&self, obj: &LandedObject) -> Result<Execution, IgnoreReason> {
        let name = classify(obj, self.lake_bucket)?.execution_name;
        let exists = self.starter.execution_exists(&name).await;
        Ok(Execution { name, exists })
    }

    /// What a redrive of the message would do, starting nothing.
    async fn plan(
        &self,
        message: &QueueMessage,
        records: Vec<Result<LandedObject, InvalidRecord>>,
    ) -> MessageReport {
        let (mut would_start, mut exist, mut errors) = (0u64, 0u64, 0u64);
        let mut subject = Vec::new();
        for record in records {
            let obj = match record {
                Ok(obj) => obj,
                Err(bad) => {
                    subject
                        .push(json!({"key": bad.key, "outcome": "invalid", "reason": bad.detail}));
                    continue;
                }
            };
            let Execution { name, exists } = match self.execution(&obj).await {
                Ok(execution) => execution,
                Err(why) => {
                    subject
                        .push(json!({"key": obj.key, "outcome": "ignored", "reason": why.code()}));
                    continue;
                }
            };
            let outcome = match exists {
                Ok(true) => {
                    exist += 1;
                    "already_started"
                }
                Ok(false) => {
                    would_start += 1;
                    "would_start"
                }
                Err(e) => {
                    errors += 1;
                    subject.push(json!({"key": obj.key, "outcome": "failed", "execution_name": name, "reason": error_chain(&e)}));
                    continue;
                }
            };
            subject.push(json!({"key": obj.key, "outcome": outcome, "execution_name": name}));
        }
        MessageReport {
            subject: Value::Array(subject),
            items: would_start,
            already_done: exist,
            ..MessageReport::new(
                message,
                if errors > 0 {
                    "failed"
                } else {
                    "would_redrive"
                },
                format!("{would_start} would start, {exist} exist already"),
            )
        }
    }
}
