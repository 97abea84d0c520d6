//! Conversions between wire messages and domain types.

use crate::error::{Error, Result};
use crate::version::Version;
use crate::wal::WalRecord;

impl From<&WalRecord> for proto::CommittedRecord {
    fn from(r: &WalRecord) -> proto::CommittedRecord {
        proto::CommittedRecord {
            version: r.version.0,
            commit_time_micros: r.commit_time_micros,
            mutations: r.mutations.iter().map(proto::Mutation::from).collect(),
        }
    }
}

impl TryFrom<proto::CommittedRecord> for WalRecord {
    type Error = Error;

    fn try_from(r: proto::CommittedRecord) -> Result<WalRecord> {
        Ok(WalRecord {
            version: Version(r.version),
            commit_time_micros: r.commit_time_micros,
            mutations: r
                .mutations
                .into_iter()
                .map(Mutation::try_from)
                .collect::<Result<_>>()?,
        })
    }
}
use crate::proto;
use crate::wal::Mutation;

impl From<&Mutation> for proto::Mutation {
    fn from(m: &Mutation) -> proto::Mutation {
        match m {
            Mutation::Set { key, value } => proto::Mutation {
                r#type: proto::MutationType::Set as i32,
                key: key.clone(),
                param: value.clone(),
                atomic_op: 0,
            },
            Mutation::Clear { key } => proto::Mutation {
                r#type: proto::MutationType::Clear as i32,
                key: key.clone(),
                param: Default::default(),
                atomic_op: 0,
            },
            Mutation::ClearRange { begin, end } => proto::Mutation {
                r#type: proto::MutationType::ClearRange as i32,
                key: begin.clone(),
                param: end.clone(),
                atomic_op: 0,
            },
        }
    }
}

impl TryFrom<proto::Mutation> for Mutation {
    type Error = Error;

    fn try_from(m: proto::Mutation) -> Result<Mutation> {
        match proto::MutationType::try_from(m.r#type) {
            Ok(proto::MutationType::Set) => Ok(Mutation::Set {
                key: m.key,
                value: m.param,
            }),
            Ok(proto::MutationType::Clear) => Ok(Mutation::Clear { key: m.key }),
            Ok(proto::MutationType::ClearRange) => Ok(Mutation::ClearRange {
                begin: m.key,
                end: m.param,
            }),
            _ => Err(Error::invalid(format!(
                "unknown mutation type {}",
                m.r#type
            ))),
        }
    }
}
