//! The TLS roots outbound connections trust: the Mozilla set compiled in (webpki-roots),
//! plus PEM files a deployment adds for its internal CAs (`connectors.extra_ca_files`).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("connectors.extra_ca_files: {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The extra CA certificates, DER, as read from the files.
pub fn extra_cas(files: &[String]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for path in files {
        let bad = |reason: String| TlsError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let before = out.len();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            out.push(cert.map_err(|e| bad(e.to_string()))?);
        }
        if out.len() == before {
            return Err(bad("no PEM certificate in it".into()));
        }
    }
    Ok(out)
}

pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
