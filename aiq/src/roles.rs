//! Which stages one `aiq serve` process runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Ingest,
    Orchestrator,
    Worker,
    Sink,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Orchestrator, Role::Worker, Role::Sink];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Orchestrator => "orchestrator",
            Role::Worker => "worker",
            Role::Sink => "sink",
        }
    }
}

/// A non-empty set of roles, written `ingest,worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolesError {
    #[error("roles: {0:?} is not a role; choose from ingest, orchestrator, worker, sink")]
    Unknown(String),
    #[error("roles: name at least one of ingest, orchestrator, worker, sink")]
    Empty,
}

impl FromStr for Roles {
    type Err = RolesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let role = Role::ALL
                .into_iter()
                .find(|r| r.as_str() == part)
                .ok_or_else(|| RolesError::Unknown(part.to_owned()))?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(RolesError::Empty);
        }
        roles.sort();
        Ok(Roles(roles))
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Roles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dedupes_and_orders() {
        let r: Roles = "sink, ingest,sink".parse().unwrap();
        assert_eq!(r.to_string(), "ingest,sink");
        assert_eq!(
            "ingest,cron".parse::<Roles>().unwrap_err(),
            RolesError::Unknown("cron".into())
        );
        assert_eq!(" , ".parse::<Roles>().unwrap_err(), RolesError::Empty);
    }
}
