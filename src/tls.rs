//! TLS with rustls (ring provider): listener configs with optional client-certificate
//! verification, upstream client configs, certificate reload, and the client identity a
//! sender-constrained token is checked against.
//!
//! Owns reading PEM files and building rustls configs; never logs key material. Listener
//! configs live behind an `ArcSwap` and are rebuilt when their files change, so a rotated
//! certificate is served to new connections without a restart; a rotation that does not load
//! keeps the previous certificate and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, SanKind, TlsSettings};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable private key ({e})", path.display()))
}

/// Reads a PEM CA bundle into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate ({e})", path.display()))?;
    }
    Ok(roots)
}

/// A listener's rustls config from its settings: ALPN h2 and http/1.1, TLS 1.2 and 1.3, client
/// certificates verified against `clientCa` when set.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs(&s.cert)?;
    let key = load_key(&s.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &s.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match s.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} / {}: {e}", s.cert.display(), s.key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An upstream's client config: trusts `ca` (else the Mozilla roots), presents `client` when
/// given.
pub fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display())),
    }
}

/// A listener's TLS config that follows its files.
pub struct ServerTls {
    settings: TlsSettings,
    config: ArcSwap<ServerConfig>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

fn stamps(s: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    let mut files: Vec<&PathBuf> = vec![&s.cert, &s.key];
    files.extend(s.client_ca.iter());
    files
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl ServerTls {
    /// Loads the certificate, key and CA bundle.
    pub fn new(settings: TlsSettings) -> Result<ServerTls, String> {
        let config = server_config(&settings)?;
        Ok(ServerTls {
            stamps: Mutex::new(stamps(&settings)),
            config: ArcSwap::new(config),
            settings,
        })
    }

    /// The config new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Reloads when a file changed. `Ok(true)` when a new config is in use; on error the
    /// previous one stays.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamps(&self.settings);
        {
            let Ok(seen) = self.stamps.lock() else {
                return Ok(false);
            };
            if *seen == now {
                return Ok(false);
            }
        }
        let config = server_config(&self.settings)?;
        self.config.store(config);
        if let Ok(mut seen) = self.stamps.lock() {
            *seen = now;
        }
        Ok(true)
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// Who the client certificate says the peer is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// URI SANs (SPIFFE IDs among them).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
}

impl ClientIdentity {
    /// Reads the SANs of the end-entity certificate of a verified chain.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<ClientIdentity> {
        let leaf = chain.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let mut id = ClientIdentity::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::URI(u) => id.uris.push((*u).to_string()),
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        id.dns.push(d.to_ascii_lowercase())
                    }
                    _ => {}
                }
            }
        }
        Some(id)
    }

    /// Whether this identity is the one `template` (`spiffe://example.org/agent/{agent}`,
    /// optionally with `{tenant}`) gives for `agent` of `tenant`, in the SAN kind the rule
    /// names.
    pub fn matches(&self, kind: SanKind, template: &str, tenant: &str, agent: &str) -> bool {
        let want = template
            .replace("{tenant}", tenant)
            .replace("{agent}", agent);
        match kind {
            SanKind::Uri => self.uris.contains(&want),
            SanKind::Dns => self.dns.iter().any(|d| d.eq_ignore_ascii_case(&want)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_match_their_template_exactly() {
        let id = ClientIdentity {
            uris: vec!["spiffe://corp/agent/agent_1".into()],
            dns: vec!["agent-1.agents.corp".into()],
        };
        let t = "spiffe://corp/agent/{agent}";
        assert!(id.matches(SanKind::Uri, t, "t", "agent_1"));
        assert!(!id.matches(SanKind::Uri, t, "t", "agent_2"));
        assert!(!id.matches(SanKind::Uri, t, "t", "agent_"));
        assert!(!id.matches(SanKind::Dns, t, "t", "agent_1"));
        assert!(id.matches(SanKind::Dns, "{agent}.agents.corp", "t", "AGENT-1"));
        // With {tenant}, the same agent id in another tenant is another identity.
        let tt = "spiffe://corp/tenant/{tenant}/agent/{agent}";
        let id = ClientIdentity {
            uris: vec!["spiffe://corp/tenant/a/agent/agent_1".into()],
            dns: vec![],
        };
        assert!(id.matches(SanKind::Uri, tt, "a", "agent_1"));
        assert!(!id.matches(SanKind::Uri, tt, "b", "agent_1"));
    }
}
