//! Identifier newtypes. Each validates on construction and on deserialisation, so a
//! value of these types is always well-formed wherever it travels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why an identifier was refused; names the kind of id and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} has {found:?} at position {position}; allowed: {allowed}")]
    BadChar {
        kind: &'static str,
        value: String,
        found: char,
        position: usize,
        allowed: &'static str,
    },
    #[error("{kind} {value:?} is not a UUID: {reason}")]
    NotUuid {
        kind: &'static str,
        value: String,
        reason: String,
    },
}

fn check_slug(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(usize, char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong {
            kind,
            value: value.to_owned(),
            max,
        });
    }
    if let Some((position, found)) = value.chars().enumerate().find(|&(i, c)| !ok(i, c)) {
        return Err(IdError::BadChar {
            kind,
            value: value.to_owned(),
            found,
            position,
            allowed,
        });
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_slug($kind, &value, $max, $allowed, $ok)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(
    /// A tenant. Lower-case so that keys, folder names and metric labels agree. A tenant
    /// lives in one partition (its records are keyed by the plain id); `#` is refused
    /// with the rest so that a future sub-key (`tenant#shard`) can never be a tenant id.
    TenantId,
    "tenant id",
    64,
    "a-z, 0-9, '-' and '_', starting with a letter or digit",
    |i, c| c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && (c == '-' || c == '_'))
);

slug_id!(
    /// A workflow, unique within its tenant.
    WorkflowId,
    "workflow id",
    128,
    "A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
    |i, c| c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '-' | '_' | '.'))
);

slug_id!(
    /// A step, unique within its workflow definition.
    StepId,
    "step id",
    128,
    "A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit",
    |i, c| c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '-' | '_' | '.'))
);

/// A workflow run. A UUID so that ids are unique across tenants and instances; derived
/// deterministically (v5) from an idempotency key when the caller gives one, so that a
/// retried trigger names the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// Namespace for v5 run ids; fixed forever, since changing it renames every run.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_52c4_8f0e_4b6e_9a57_3d1c_0be2_7f10);

    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The run id for a trigger carrying an idempotency key: the same tenant, workflow and
    /// key always give the same id.
    pub fn from_idempotency_key(tenant: &TenantId, workflow: &WorkflowId, key: &str) -> Self {
        let name = format!("{tenant}\u{1f}{workflow}\u{1f}{key}");
        Self(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|e| IdError::NotUuid {
            kind: "run id",
            value: s.to_owned(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_accept_slugs_and_name_the_bad_character() {
        assert!(TenantId::new("acme-42_eu").is_ok());
        let err = TenantId::new("Acme").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant id \"Acme\" has 'A' at position 0; allowed: a-z, 0-9, '-' and '_', starting with a letter or digit"
        );
        assert_eq!(
            TenantId::new("").unwrap_err(),
            IdError::Empty { kind: "tenant id" }
        );
        assert!(matches!(
            TenantId::new("a#1"),
            Err(IdError::BadChar { found: '#', .. })
        ));
        assert!(matches!(
            TenantId::new("x".repeat(65)),
            Err(IdError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn a_tenant_id_with_a_hash_is_refused_naming_the_character() {
        let err = TenantId::new("acme#2").unwrap_err();
        assert_eq!(
            err,
            IdError::BadChar {
                kind: "tenant id",
                value: "acme#2".into(),
                found: '#',
                position: 4,
                allowed: "a-z, 0-9, '-' and '_', starting with a letter or digit",
            }
        );
        assert!(err.to_string().contains("has '#' at position 4"), "{err}");
        // Wherever a tenant id is read: a record keyed `acme#2` is refused too.
        let from_json: Result<TenantId, _> = serde_json::from_str("\"acme#2\"");
        assert!(from_json.unwrap_err().to_string().contains("'#'"));
    }

    #[test]
    fn ids_validate_when_deserialised() {
        let ok: Result<WorkflowId, _> = serde_json::from_str("\"order-sync.v2\"");
        assert_eq!(ok.map(|w| w.to_string()).ok(), Some("order-sync.v2".into()));
        let bad: Result<WorkflowId, _> = serde_json::from_str("\"-x\"");
        let msg = bad.unwrap_err().to_string();
        assert!(
            msg.contains("workflow id \"-x\" has '-' at position 0"),
            "{msg}"
        );
    }

    #[test]
    fn run_ids_from_the_same_idempotency_key_agree() {
        let t = TenantId::new("acme").unwrap();
        let w = WorkflowId::new("sync").unwrap();
        let a = RunId::from_idempotency_key(&t, &w, "k1");
        assert_eq!(a, RunId::from_idempotency_key(&t, &w, "k1"));
        assert_ne!(a, RunId::from_idempotency_key(&t, &w, "k2"));
        let other = TenantId::new("other").unwrap();
        assert_ne!(a, RunId::from_idempotency_key(&other, &w, "k1"));
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
    }
}
