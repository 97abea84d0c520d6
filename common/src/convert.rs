//! Conversions between wire messages and domain types.

use crate::error::{Error, Result};
use crate::proto;
use crate::wal::Mutation;

impl From<&Mutation> for proto::Mutation {
    fn from(m: &Mutation) -> proto::Mutation {
        match m {
            Mutation::Set { key, value } => proto::Mutation {
                r#type: proto::MutationType::Set as i32,
                key: key.clone(),
                param: value.clone(),
            },
            Mutation::Clear { key } => proto::Mutation {
                r#type: proto::MutationType::Clear as i32,
                key: key.clone(),
                param: Default::default(),
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
            _ => Err(Error::invalid(format!(
                "unknown mutation type {}",
                m.r#type
            ))),
        }
    }
}
