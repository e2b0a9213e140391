//! The vendor's certificate authority and the certificates it issues.
//!
//! Every certificate names its holder in one URI SAN,
//! `urn:covenant:<role>:<id>`; a certificate request also carries the
//! holder's Ed25519 signing key as `urn:covenant:ed25519:<hex>`, so no
//! private key ever travels. A certificate is only a credential for the
//! call: it works once its SHA-256 is registered in the ledger by a signed
//! admin action, and stops working when that registration is revoked.

use covenant_core::digest::Sha256Digest;
use covenant_core::keys::PublicKey;
use covenant_core::statements::IdentityRole;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Prefix of the URI SAN naming a certificate's holder.
pub const HOLDER_PREFIX: &str = "urn:covenant:";
/// Prefix of the URI SAN carrying a signing key in a certificate request.
pub const SIGNING_KEY_PREFIX: &str = "urn:covenant:ed25519:";

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The request or certificate is not what Covenant issues.
    #[error("{0}")]
    Invalid(&'static str),
}

fn ten_years() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(3650))
}

/// The certificate authority: its certificate, PEM, and its key.
#[derive(Debug, Clone)]
pub struct Authority {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA key.
    pub key: CaKey,
}

/// Where the CA's key is.
#[derive(Debug, Clone)]
pub enum CaKey {
    /// PEM (kept 0600 in the data directory as `ca.key`).
    Pem(String),
    /// An Ed25519 key held in a PKCS#11 token (`keys.toml`'s `ca`): it signs
    /// certificates there and never leaves it.
    Held(std::sync::Arc<dyn covenant_core::keys::Signer>),
}

/// What signs a certificate: a key pair in memory, or the CA's key in a
/// token, through rcgen's `SigningKey`.
enum CaSigner {
    Pair(Box<KeyPair>),
    Held { signer: std::sync::Arc<dyn covenant_core::keys::Signer>, public: [u8; 32] },
}

impl rcgen::PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaSigner::Pair(k) => k.der_bytes(),
            CaSigner::Held { public, .. } => public,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaSigner::Pair(k) => k.algorithm(),
            CaSigner::Held { .. } => &rcgen::PKCS_ED25519,
        }
    }
}

impl rcgen::SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaSigner::Pair(k) => k.sign(msg),
            CaSigner::Held { signer, .. } => {
                signer.try_sign(msg).map(|s| s.to_vec()).map_err(|_| rcgen::Error::RemoteKeyError)
            }
        }
    }
}

impl CaKey {
    fn signer(&self) -> Result<CaSigner, PkiError> {
        Ok(match self {
            CaKey::Pem(pem) => CaSigner::Pair(Box::new(KeyPair::from_pem(pem)?)),
            CaKey::Held(signer) => CaSigner::Held { signer: signer.clone(), public: signer.public().to_bytes() },
        })
    }
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (only when generated here, for `init --dev`).
    pub key_pem: String,
    /// SHA-256 of the certificate's DER bytes.
    pub fingerprint: Sha256Digest,
}

impl Authority {
    /// A new self-signed CA.
    pub fn create(name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let pem = key.serialize_pem();
        Self::self_signed(name, CaSigner::Pair(Box::new(key)), CaKey::Pem(pem))
    }

    /// A new self-signed CA whose Ed25519 key is held in a token.
    pub fn create_held(name: &str, signer: std::sync::Arc<dyn covenant_core::keys::Signer>) -> Result<Self, PkiError> {
        let key = CaKey::Held(signer);
        Self::self_signed(name, key.signer()?, key)
    }

    fn self_signed(name: &str, signer: CaSigner, key: CaKey) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = ten_years();
        let cert = params.self_signed(&signer)?;
        Ok(Authority { cert_pem: cert.pem(), key })
    }

    fn issuer(&self) -> Result<Issuer<'static, CaSigner>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, self.key.signer()?)?)
    }

    /// The server's certificate for these DNS names and IP addresses.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, "covenant-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (params.not_before, params.not_after) = ten_years();
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued { fingerprint: Sha256Digest::of(cert.der()), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client certificate with a key made here (development set-ups
    /// only: in production the holder makes its key and sends a request).
    pub fn issue_client(&self, role: IdentityRole, subject: &str) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = client_params(role, subject)?.signed_by(&key, &self.issuer()?)?;
        Ok(Issued { fingerprint: Sha256Digest::of(cert.der()), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a certificate request for `role`/`subject`, returning the
    /// certificate and the signing key the request carries.
    pub fn issue_from_request(
        &self,
        csr_pem: &str,
        role: IdentityRole,
        subject: &str,
    ) -> Result<(Issued, PublicKey), PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let signing_key = csr
            .params
            .subject_alt_names
            .iter()
            .find_map(|san| match san {
                SanType::URI(uri) => uri.as_str().strip_prefix(SIGNING_KEY_PREFIX).map(str::to_owned),
                _ => None,
            })
            .ok_or(PkiError::Invalid("the certificate request names no urn:covenant:ed25519 signing key"))?;
        let signing_key = PublicKey::from_hex(&signing_key)
            .map_err(|_| PkiError::Invalid("the signing key in the request is not a valid Ed25519 key"))?;
        // The holder's name comes from the admin, never from the request.
        let cert = client_params(role, subject)?.signed_by(&csr.public_key, &self.issuer()?)?;
        Ok((
            Issued { fingerprint: Sha256Digest::of(cert.der()), cert_pem: cert.pem(), key_pem: String::new() },
            signing_key,
        ))
    }
}

fn client_params(role: IdentityRole, subject: &str) -> Result<CertificateParams, PkiError> {
    if !covenant_core::statements::is_valid_id(subject) {
        return Err(PkiError::Invalid("the subject id must be 1-64 characters of a-z 0-9 . _ -"));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("{role}:{subject}"));
    let uri = format!("{HOLDER_PREFIX}{role}:{subject}");
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    (params.not_before, params.not_after) = ten_years();
    Ok(params)
}

/// A certificate request for a holder's TLS key, carrying its signing key.
/// Returns (request PEM, TLS key PEM).
pub fn certificate_request(signing_key: &PublicKey) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "covenant holder");
    let uri = format!("{SIGNING_KEY_PREFIX}{}", hex::encode(signing_key.to_bytes()));
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Who a client certificate names: role and subject from its
/// `urn:covenant:<role>:<id>` URI SAN, and its SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The role.
    pub role: IdentityRole,
    /// The subject id.
    pub subject: String,
    /// SHA-256 of the DER bytes.
    pub fingerprint: Sha256Digest,
}

/// Reads the holder of a DER certificate (already validated by TLS).
pub fn holder(der: &[u8]) -> Result<Holder, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| PkiError::Invalid("unparsable certificate"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PkiError::Invalid("malformed subject alternative names"))?
        .ok_or(PkiError::Invalid("the certificate has no subject alternative name"))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix(HOLDER_PREFIX)
            && let Some((role, subject)) = rest.split_once(':')
            && let Ok(role) = role.parse::<IdentityRole>()
        {
            if found.is_some() {
                return Err(PkiError::Invalid("the certificate names more than one holder"));
            }
            found = Some((role, subject.to_owned()));
        }
    }
    let (role, subject) = found.ok_or(PkiError::Invalid("the certificate names no urn:covenant holder"))?;
    Ok(Holder { role, subject, fingerprint: Sha256Digest::of(der) })
}

/// The DER bytes of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use covenant_core::keys::SigningKey;

    #[test]
    fn a_request_becomes_a_certificate_naming_the_holder_the_admin_chose() {
        let ca = Authority::create("test CA").unwrap();
        let signing = SigningKey::from_seed(&[3; 32]).public();
        let (csr, _tls_key) = certificate_request(&signing).unwrap();
        let (issued, key) = ca.issue_from_request(&csr, IdentityRole::Customer, "ministry-x").unwrap();
        assert_eq!(key, signing);
        let der = pem_to_der(&issued.cert_pem).unwrap();
        let h = holder(&der).unwrap();
        assert_eq!((h.role, h.subject.as_str()), (IdentityRole::Customer, "ministry-x"));
        assert_eq!(h.fingerprint, issued.fingerprint);
    }

    #[test]
    fn a_request_without_a_signing_key_is_refused() {
        let ca = Authority::create("test CA").unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["x".to_owned()]).unwrap().serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(ca.issue_from_request(&csr, IdentityRole::Customer, "x"), Err(PkiError::Invalid(_))));
    }
}
