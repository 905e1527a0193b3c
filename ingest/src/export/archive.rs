//! The export archive: one tar holding JSON Lines files, the tenant's Parquet files and
//! `manifest.json` (last), which lists every other file with its size, row count and
//! SHA-256. Built in memory within a byte bound; [`verify`] reads one back and checks
//! every digest.

use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "aiq-export/1";
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("the export passed {limit} bytes (at {name}); export.max_archive_bytes bounds it")]
    TooLarge { limit: usize, name: String },
    #[error("the archive is not a valid tar: {0}")]
    Tar(String),
    #[error("the archive has no {MANIFEST}")]
    NoManifest,
    #[error("{name}: {reason}")]
    Mismatch { name: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    pub bytes: u64,
    /// Hex.
    pub sha256: String,
    /// Lines of a JSON Lines file; absent for other files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tenant: String,
    pub export_id: String,
    pub created_at: DateTime<Utc>,
    pub files: Vec<ManifestEntry>,
}

/// JSON Lines in memory, counting its rows.
#[derive(Default)]
pub struct Jsonl {
    pub bytes: Vec<u8>,
    pub rows: u64,
}

impl Jsonl {
    pub fn push(&mut self, row: &impl Serialize) {
        // Values that serialize: ids, strings, times and JSON values only.
        if serde_json::to_writer(&mut self.bytes, row).is_ok() {
            self.bytes.push(b'\n');
            self.rows += 1;
        }
    }
}

pub struct Archive {
    tar: tar::Builder<Vec<u8>>,
    files: Vec<ManifestEntry>,
    limit: usize,
}

fn header(len: usize) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(len as u64);
    h.set_mode(0o600);
    h.set_mtime(0);
    h
}

impl Archive {
    pub fn new(limit: usize) -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
            files: Vec::new(),
            limit,
        }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        if self.tar.get_ref().len() + bytes.len() + 1024 > self.limit {
            return Err(ArchiveError::TooLarge {
                limit: self.limit,
                name: name.to_owned(),
            });
        }
        let mut h = header(bytes.len());
        self.tar
            .append_data(&mut h, name, bytes)
            .map_err(|e| ArchiveError::Tar(e.to_string()))
    }

    /// Adds a file; `rows` for JSON Lines.
    pub fn add(&mut self, name: &str, bytes: &[u8], rows: Option<u64>) -> Result<(), ArchiveError> {
        self.put(name, bytes)?;
        self.files.push(ManifestEntry {
            name: name.to_owned(),
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            rows,
        });
        Ok(())
    }

    pub fn add_jsonl(&mut self, name: &str, j: &Jsonl) -> Result<(), ArchiveError> {
        self.add(name, &j.bytes, Some(j.rows))
    }

    /// Writes the manifest last; returns the archive and the manifest's SHA-256.
    pub fn finish(
        mut self,
        tenant: &str,
        export_id: &str,
        created_at: DateTime<Utc>,
    ) -> Result<(Vec<u8>, String, Manifest), ArchiveError> {
        let manifest = Manifest {
            format: FORMAT.to_owned(),
            tenant: tenant.to_owned(),
            export_id: export_id.to_owned(),
            created_at,
            files: std::mem::take(&mut self.files),
        };
        let text =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Tar(e.to_string()))?;
        self.put(MANIFEST, &text)?;
        let bytes = self
            .tar
            .into_inner()
            .map_err(|e| ArchiveError::Tar(e.to_string()))?;
        Ok((bytes, hex::encode(Sha256::digest(&text)), manifest))
    }
}

/// Reads an archive back: every file named in the manifest is there with its size and
/// digest, and nothing else is. Returns the manifest and the files by name.
pub fn verify(
    archive: &[u8],
) -> Result<(Manifest, std::collections::BTreeMap<String, Vec<u8>>), ArchiveError> {
    let mut files = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::Tar(e.to_string()))?;
    for e in entries {
        let mut e = e.map_err(|e| ArchiveError::Tar(e.to_string()))?;
        let name = e
            .path()
            .map_err(|e| ArchiveError::Tar(e.to_string()))?
            .display()
            .to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)
            .map_err(|e| ArchiveError::Tar(e.to_string()))?;
        files.insert(name, bytes);
    }
    let text = files.remove(MANIFEST).ok_or(ArchiveError::NoManifest)?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| ArchiveError::Mismatch {
        name: MANIFEST.to_owned(),
        reason: e.to_string(),
    })?;
    let mismatch = |name: &str, reason: String| ArchiveError::Mismatch {
        name: name.to_owned(),
        reason,
    };
    for f in &manifest.files {
        let bytes = files
            .get(&f.name)
            .ok_or_else(|| mismatch(&f.name, "listed but missing".into()))?;
        if bytes.len() as u64 != f.bytes {
            return Err(mismatch(
                &f.name,
                format!("{} bytes, listed {}", bytes.len(), f.bytes),
            ));
        }
        let digest = hex::encode(Sha256::digest(bytes));
        if digest != f.sha256 {
            return Err(mismatch(
                &f.name,
                "its SHA-256 differs from the manifest's".into(),
            ));
        }
    }
    if let Some(extra) = files
        .keys()
        .find(|n| !manifest.files.iter().any(|f| &f.name == *n))
    {
        return Err(mismatch(extra, "not listed in the manifest".into()));
    }
    Ok((manifest, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_verifies_and_a_changed_byte_does_not() {
        let mut a = Archive::new(1 << 20);
        let mut runs = Jsonl::default();
        runs.push(&serde_json::json!({"run": 1}));
        runs.push(&serde_json::json!({"run": 2}));
        a.add_jsonl("runs.jsonl", &runs).unwrap();
        a.add("parquet/warm/runs/x.parquet", b"PAR1....PAR1", None)
            .unwrap();
        let (bytes, _, m) = a.finish("acme", "e1", Utc::now()).unwrap();
        assert_eq!(m.files[0].rows, Some(2));
        let (back, files) = verify(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(files["runs.jsonl"], runs.bytes);
        let mut bad = bytes.clone();
        let at = bad.windows(7).position(|w| w == b"\"run\":1").unwrap();
        bad[at + 6] = b'9';
        assert!(matches!(verify(&bad), Err(ArchiveError::Mismatch { .. })));
    }

    #[test]
    fn the_bound_is_kept() {
        let mut a = Archive::new(4096);
        assert!(matches!(
            a.add("big", &[0u8; 8192], None),
            Err(ArchiveError::TooLarge { .. })
        ));
    }
}
