//! The ordered migrations, embedded so the binary needs no files at run time.

use sha2::{Digest, Sha256};

/// One numbered migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    source: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            source: include_str!(concat!("../migrations/", $name, ".cql")),
        }
    };
}

/// Every migration, in the order it applies. Append only: an applied migration is never
/// edited (the runner refuses a changed checksum); a change is a new migration.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_keyspace"),
    migration!(2, "0002_run_history"),
    migration!(3, "0003_service_probes"),
    migration!(4, "0004_registry"),
    migration!(5, "0005_api_keys_by_tenant"),
    migration!(6, "0006_run_indexes"),
    migration!(7, "0007_dead_letters"),
    migration!(8, "0008_replays"),
    migration!(9, "0009_audit_fields"),
    migration!(10, "0010_exports"),
    migration!(11, "0011_run_erasure"),
];

impl Migration {
    /// The statements with the keyspace and replication filled in. Statements end with
    /// `;` at the end of a line; `--` lines are comments.
    pub fn statements(&self, keyspace: &str, replication: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in self.source.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("--") {
                continue;
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(line);
            if trimmed.ends_with(';') {
                let stmt = current.trim().trim_end_matches(';').trim().to_owned();
                out.push(
                    stmt.replace("{keyspace}", keyspace)
                        .replace("{replication}", replication),
                );
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            out.push(
                current
                    .trim()
                    .replace("{keyspace}", keyspace)
                    .replace("{replication}", replication),
            );
        }
        out
    }

    /// Of the source as written, so that an edited migration is noticed.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.source.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_and_match_file_names() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1);
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn every_file_in_the_folder_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.cql", m.name))
            .collect();
        assert_eq!(files, listed);
    }

    #[test]
    fn statements_are_split_and_templated() {
        let stmts = MIGRATIONS[0].statements(
            "ks1",
            "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        );
        assert_eq!(stmts.len(), 2);
        assert!(stmts[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks1\n"));
        assert!(stmts[1].contains("ks1.schema_migrations"));
        for m in MIGRATIONS {
            for s in m.statements("k", "r") {
                assert!(!s.contains('{') || s.contains("'class'") || !s.contains("{keyspace}"));
                assert!(!s.ends_with(';'));
                assert!(
                    s.contains("IF NOT EXISTS"),
                    "{}: every statement must be safe to run again: {s}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn checksums_are_stable_hex() {
        let c = MIGRATIONS[1].checksum();
        assert_eq!(c.len(), 64);
        assert_eq!(c, MIGRATIONS[1].checksum());
        assert_ne!(c, MIGRATIONS[0].checksum());
    }
}
