//! TLS for our clients (`load tls://` and `client tls://`): what a client
//! trusts and which name it checks ([`TlsConnector`], made once per run
//! from `--tls-ca`, `--tls-insecure` and `--tls-sni`), and how a failed
//! handshake is told for people ([`TlsConnector::describe`]: unknown
//! issuer, name mismatch, expired). The session over a socket, records in
//! and out, is `stream`'s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, InvalidMessage, SignatureScheme};

mod stream;

pub(crate) use stream::TlsStream;
pub use stream::{HandshakeError, TlsVersion};

/// What a client trusts to vouch for the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's root certificates (its trust store, as
    /// rustls-native-certs finds it).
    System,
    /// The root certificates in this PEM file (`--tls-ca`).
    File(PathBuf),
    /// Nothing: the certificate is not checked at all (`--tls-insecure`).
    /// The handshake's signatures still are, so the server must hold the
    /// key of the certificate it shows.
    Insecure,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::System => f.write_str("the system's trust store"),
            Trust::File(path) => write!(f, "--tls-ca {}", path.display()),
            Trust::Insecure => f.write_str("nothing (--tls-insecure)"),
        }
    }
}

/// Making a [`TlsConnector`] failed; the message names the file or the
/// name at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError(pub String);

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

/// How every TLS connection of a run (or a client session) begins: the
/// trusted roots, the server name to send and check, TLS 1.2 and 1.3 with
/// the ring provider's safe defaults. Cheap to clone; one per run, so
/// that sessions resume across the run's connections.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    trust: Trust,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector trusting `trust`, checking the certificate against
    /// `server_name`: a DNS name (sent as SNI too), or an IP address,
    /// checked against the certificate's IP addresses (and, as the TLS
    /// rules say, not sent as SNI).
    ///
    /// # Errors
    ///
    /// [`TlsConfigError`]: a name that is neither a DNS name nor an IP
    /// address; a roots file that cannot be read, holds no PEM
    /// certificate or one that is not a usable root (naming the file); a
    /// system trust store with no usable root.
    pub fn new(trust: Trust, server_name: &str) -> Result<TlsConnector, TlsConfigError> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            TlsConfigError(format!(
                "'{server_name}' is not a DNS name or an IP address to check the certificate against"
            ))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError(format!("TLS versions: {e}")))?;
        let config = match &trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
            Trust::File(path) => builder
                .with_root_certificates(roots_from_file(path)?)
                .with_no_client_auth(),
            Trust::System => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
        };
        Ok(TlsConnector {
            config: Arc::new(config),
            server_name: name,
            trust,
        })
    }

    /// The name the certificate is checked against, as given.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// What the certificate is checked against.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// False with [`Trust::Insecure`]: any certificate is taken.
    pub fn is_verified(&self) -> bool {
        self.trust != Trust::Insecure
    }

    /// A failed handshake in words: what failed and why, naming the roots
    /// for an unknown issuer (`certificate verification failed: unknown
    /// issuer (...)`).
    pub fn describe(&self, e: &HandshakeError) -> String {
        match e {
            HandshakeError::Tls(rustls::Error::InvalidCertificate(c)) => {
                format!(
                    "certificate verification failed: {}",
                    certificate_problem(c, &self.trust)
                )
            }
            HandshakeError::Tls(e) => session_problem(e),
            HandshakeError::Closed => {
                "the server closed the connection during the TLS handshake".into()
            }
            // rustls's read refuses more than 64 KiB of one handshake
            // message before it has parsed the message's length.
            HandshakeError::Io(e)
                if e.kind() == std::io::ErrorKind::InvalidData
                    && e.to_string() == "message buffer full" =>
            {
                format!("{TOO_LARGE} ({e})")
            }
            HandshakeError::Io(e) => format!("the connection failed during the TLS handshake: {e}"),
        }
    }

    /// A new client session, its first flight (the ClientHello) queued.
    fn session(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
    }
}

/// The words for a certificate the verifier refused.
fn certificate_problem(c: &CertificateError, trust: &Trust) -> String {
    let when = |secs: u64| crate::load::split::rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    match c {
        CertificateError::UnknownIssuer => {
            format!("unknown issuer (no root in {trust} signed the server's chain)")
        }
        CertificateError::NotValidForName => "name mismatch".into(),
        CertificateError::NotValidForNameContext { .. } => format!("name mismatch: {c}"),
        CertificateError::Expired => "expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("expired (not valid after {})", when(not_after.as_secs()))
        }
        CertificateError::NotValidYet => "not valid yet".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("not valid yet (not before {})", when(not_before.as_secs()))
        }
        CertificateError::BadSignature => "bad signature in the chain".into(),
        other => other.to_string(),
    }
}

/// A handshake message over rustls's limit, however rustls tells it.
const TOO_LARGE: &str = "the server's handshake message is larger than rustls accepts \
     (64 KiB; a certificate chain that long?)";

/// The words for any other session error in a handshake.
fn session_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the handshake (TLS alert {alert:?})")
        }
        // TLS, but more than rustls takes in one handshake message (a
        // fixed 64 KiB, not ours to raise): a huge certificate chain.
        rustls::Error::InvalidMessage(
            InvalidMessage::HandshakePayloadTooLarge | InvalidMessage::CertificatePayloadTooLarge,
        ) => format!("{TOO_LARGE} ({e})"),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            format!("the server does not speak TLS ({e})")
        }
        rustls::Error::PeerIncompatible(_) => {
            format!("no TLS version or cipher suite in common ({e})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// Reads every certificate of a PEM file into a root store.
fn roots_from_file(path: &Path) -> Result<rustls::RootCertStore, TlsConfigError> {
    let fail = |problem: String| TlsConfigError(format!("{}: {problem}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_problem(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable root certificate: {e}")))?;
    }
    Ok(roots)
}

fn pem_problem(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => "no PEM certificate in it".into(),
        other => format!("not a PEM certificate: {other}"),
    }
}

/// The system's trust store; refused when it holds no usable root, since
/// every handshake would then fail the same way.
fn system_roots() -> Result<rustls::RootCertStore, TlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or(String::new(), |e| format!(" ({e})"));
        return Err(TlsConfigError(format!(
            "no root certificate found in the system's trust store{why}: give --tls-ca FILE"
        )));
    }
    Ok(roots)
}

/// `--tls-insecure`: takes any certificate for any name, but still checks
/// the handshake's signatures with it.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_failures_say_what_failed() {
        let file = Trust::File("/tmp/ca.pem".into());
        let connector = TlsConnector::new(Trust::Insecure, "localhost").expect("connector");
        let say = |c: CertificateError| {
            let e = HandshakeError::Tls(rustls::Error::InvalidCertificate(c));
            connector.describe(&e)
        };
        assert!(say(CertificateError::UnknownIssuer).contains("unknown issuer"));
        assert!(
            certificate_problem(&CertificateError::UnknownIssuer, &file)
                .contains("--tls-ca /tmp/ca.pem"),
            "names the roots"
        );
        assert!(say(CertificateError::NotValidForName).contains("name mismatch"));
        let expired = say(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(978_307_200)),
        });
        assert!(
            expired.contains("expired (not valid after 2001-01-01T00:00:00"),
            "{expired}"
        );
        let alert = connector.describe(&HandshakeError::Tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        )));
        assert!(alert.contains("refused the handshake"), "{alert}");
        assert!(connector
            .describe(&HandshakeError::Closed)
            .contains("closed the connection"));
        let big = connector.describe(&HandshakeError::Tls(rustls::Error::InvalidMessage(
            InvalidMessage::HandshakePayloadTooLarge,
        )));
        assert!(big.contains("larger than rustls accepts"), "{big}");
        assert!(!big.contains("does not speak TLS"), "{big}");
        let full = connector.describe(&HandshakeError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message buffer full",
        )));
        assert!(full.contains("larger than rustls accepts"), "{full}");
    }

    #[test]
    fn a_name_or_an_address_is_taken_and_anything_else_refused() {
        for name in ["localhost", "echo.example.com", "127.0.0.1", "::1"] {
            let c = TlsConnector::new(Trust::Insecure, name).expect(name);
            assert_eq!(c.server_name(), name);
            assert!(!c.is_verified());
        }
        let e = TlsConnector::new(Trust::Insecure, "not a name!").unwrap_err();
        assert!(e.0.contains("'not a name!'"), "{e}");
    }

    #[test]
    fn a_roots_file_that_will_not_load_is_named() {
        let dir = std::env::temp_dir().join(format!("tls-client-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        for path in [missing, garbage] {
            let e = TlsConnector::new(Trust::File(path.clone()), "localhost").unwrap_err();
            assert!(e.0.starts_with(&path.display().to_string()), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
