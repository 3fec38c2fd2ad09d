//! HTTPS for the embedded API server, as a real cluster serves it: a
//! self-signed CA (written into the kubeconfig) and a server certificate
//! for the listen address signed by it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// What one server needs for HTTPS, and what its clients need to trust it.
#[derive(Debug)]
pub(crate) struct Tls {
    /// The CA certificate in PEM form.
    ca_pem: String,
    /// The server side.
    pub server: Arc<rustls::ServerConfig>,
    /// A client that trusts the CA (for the raw test client).
    pub client: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// The CA as kubeconfig's `certificate-authority-data` (base64 of the
    /// PEM text).
    pub fn ca_data(&self) -> String {
        super::object::base64(self.ca_pem.as_bytes())
    }
}

/// The certificates per listen address. Generating a key pair and two
/// certificates costs a few milliseconds; test binaries start dozens of
/// servers on the same address, so they share one set.
static BY_IP: OnceLock<Mutex<Vec<ByIp>>> = OnceLock::new();

/// The material of one listen address.
type ByIp = (IpAddr, Arc<Tls>);

/// The TLS material for a server listening on `ip` (the certificate also
/// names `localhost` and both loopback addresses).
pub(crate) fn for_ip(ip: IpAddr) -> io::Result<Arc<Tls>> {
    let cache = BY_IP.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, tls)) = cache.iter().find(|(i, _)| *i == ip) {
        return Ok(tls.clone());
    }
    let tls = Arc::new(generate(ip).map_err(io::Error::other)?);
    cache.push((ip, tls.clone()));
    Ok(tls)
}

/// Errors while building the TLS material.
#[derive(Debug, thiserror::Error)]
enum TlsError {
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn generate(ip: IpAddr) -> Result<Tls, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "embedded-apiserver-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec![
        "localhost".to_string(),
        Ipv4Addr::LOCALHOST.to_string(),
        Ipv6Addr::LOCALHOST.to_string(),
    ];
    if !ip.is_loopback() && !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    let server_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "embedded-apiserver");
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&server_key, &issuer)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // The server speaks HTTP/1.1 only; clients that offer h2 fall back.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_per_address_and_the_ca_is_pem() {
        let a = for_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let b = for_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            a.ca_data(),
            super::super::object::base64(a.ca_pem.as_bytes())
        );
    }
}
