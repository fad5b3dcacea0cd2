//! The Kinesis event as this function reads it: [`lago::trades::kinesis`], shared with
//! `lago trades replay --kinesis-event` so both decode records (KPL aggregates included) alike.

pub use lago::trades::kinesis::*;
