//! TLS for the WSS port, on rustls (ring provider; no OpenSSL): loading the
//! certificate at start, and moving bytes between a `ServerConnection` and
//! the socket's reads (`decrypt`) and `io::writer`'s socket (`encrypt`,
//! `write_records`).
//!
//! Owns: the TLS record layer of a connection. Must never: write to a
//! socket itself (records go out through `io::writer`; what the kernel
//! refuses stays in rustls and is written on EPOLLOUT), or grow a
//! plaintext buffer past one read's worth.

use crate::config::WssSection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

/// Loads the WSS certificates into a server config: the default one, plus
/// one per server name, chosen by the client's SNI.
pub fn server_config(wss: &WssSection) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = certified_key(&wss.cert_path, &wss.key_path, &provider)?;
    let mut by_name = HashMap::new();
    for named in &wss.sni {
        let key = certified_key(&named.cert_path, &named.key_path, &provider)?;
        by_name.insert(named.server_name.to_ascii_lowercase(), key);
    }
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    Ok(Arc::new(config))
}

fn certified_key(
    cert_path: &str,
    key_path: &str,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("cannot read certificate {cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {cert_path}"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| format!("cannot read key {key_path}: {e}"))?;
    let certified = CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| format!("certificate {cert_path} and key {key_path} do not match: {e}"))?;
    Ok(Arc::new(certified))
}

/// The certificate for the client's server name, else the default one.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// Feeds `ciphertext` to the connection and appends the plaintext it
/// yields to `plain`. Returns true when the peer sent close_notify.
pub fn decrypt(tls: &mut ServerConnection, mut ciphertext: &[u8], plain: &mut Vec<u8>) -> Result<bool, String> {
    let mut peer_closed = false;
    while !ciphertext.is_empty() {
        let used = tls.read_tls(&mut ciphertext).map_err(|e| e.to_string())?;
        let state = tls.process_new_packets().map_err(|e| e.to_string())?;
        peer_closed |= state.peer_has_closed();
        let start = plain.len();
        let ready = state.plaintext_bytes_to_read();
        plain.resize(start + ready, 0);
        let read = tls.reader().read(&mut plain[start..]).unwrap_or(0);
        plain.truncate(start + read);
        if used == 0 && ready == 0 {
            break;
        }
    }
    Ok(peer_closed)
}

/// What writing TLS records left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// Nothing left in rustls.
    Written,
    /// The kernel is full; the rest waits for EPOLLOUT.
    Blocked,
    /// The connection is broken.
    Broken,
}

/// Writes every pending record to `socket` (`io::writer`'s: the one
/// place that writes to a client socket).
pub fn write_records(tls: &mut ServerConnection, socket: &mut impl Write) -> Records {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(0) => return Records::Broken,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Records::Blocked,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Records::Broken,
        }
    }
    Records::Written
}

/// Queues plaintext in rustls; returns how much it took (it bounds its own buffer).
pub fn encrypt(tls: &mut ServerConnection, plaintext: &[u8]) -> usize {
    tls.writer().write(plaintext).unwrap_or(0)
}
