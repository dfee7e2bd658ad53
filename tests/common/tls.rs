//! Certificates made at test time (never checked in) and a small blocking
//! TLS client over rustls, for the tests that speak TLS to the server.
//!
//! [`Pki::new`] makes a CA and a server certificate for `localhost`,
//! `127.0.0.1` and `::1`, writes them as PEM files into a directory of its
//! own, and removes it on drop. [`Pki::stranger`] is another CA that
//! signed nothing the server presents; [`Pki::expired`] a certificate of
//! the same CA that expired long ago; [`Pki::haproxy_pem`] the certificate
//! and key in the one file HAProxy's `crt` reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

use super::IO_TIMEOUT;

/// A CA, a server certificate it signed, and their files.
pub struct Pki {
    /// The directory holding the files; removed on drop.
    pub dir: PathBuf,
    /// The CA's certificate, PEM.
    pub ca: PathBuf,
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8).
    pub key: PathBuf,
    ca_der: CertificateDer<'static>,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A fresh CA and server certificate.
    pub fn new() -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "echo-reactor-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let (ca_cert, ca_key) = make_ca("echo-reactor test CA");
        let (cert, key) = server_cert(&ca_cert, &ca_key, false);
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write pem");
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            ca_der: ca_cert.der().clone(),
            ca_cert,
            ca_key,
            dir,
        }
    }

    /// A server certificate of this CA for the same names that was valid
    /// in 2000 only: its chain and key files, PEM.
    pub fn expired(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = server_cert(&self.ca_cert, &self.ca_key, true);
        let (cert_path, key_path) = (
            self.dir.join("expired.pem"),
            self.dir.join("expired-key.pem"),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write pem");
        std::fs::write(&key_path, key.serialize_pem()).expect("write pem");
        (cert_path, key_path)
    }

    /// The certificate, then its key, in one PEM file, as HAProxy's
    /// `crt` takes them.
    pub fn haproxy_pem(&self) -> PathBuf {
        let path = self.dir.join("haproxy.pem");
        let cert = std::fs::read_to_string(&self.cert).expect("cert");
        let key = std::fs::read_to_string(&self.key).expect("key");
        std::fs::write(&path, format!("{cert}{key}")).expect("write pem");
        path
    }

    /// Another CA, which signed nothing the server presents: its PEM file.
    pub fn stranger(&self) -> PathBuf {
        let (ca, _) = make_ca("a stranger's CA");
        let path = self.dir.join("stranger.pem");
        std::fs::write(&path, ca.pem()).expect("write pem");
        path
    }

    /// `serve` arguments for a TLS listener on 127.0.0.1:0 with this
    /// certificate.
    pub fn serve_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A server configuration presenting this certificate with these
    /// TLS versions, for tests that play a TLS server of their own (one
    /// that misbehaves).
    pub fn server_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        self.server_config_with_chain(&self.cert, versions)
    }

    /// As [`server_config`](Self::server_config), presenting the chain in
    /// `chain` (PEM, the leaf first) with this certificate's key.
    pub fn server_config_with_chain(
        &self,
        chain: &Path,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_file_iter(chain)
            .expect("cert file")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config"),
        )
    }

    /// A blocking TLS connection to `addr`, named `localhost`, handshake
    /// done.
    pub fn connect(&self, addr: SocketAddr) -> TlsClient {
        TlsClient::connect(addr, self.client_config(), "localhost")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server certificate for `localhost`, `127.0.0.1` and `::1` signed by
/// the CA; `expired`: valid in 2000 only (otherwise rcgen's default span).
fn server_cert(
    ca_cert: &rcgen::Certificate,
    ca_key: &KeyPair,
    expired: bool,
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "echo-reactor test server");
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let cert = params.signed_by(&key, ca_cert, ca_key).expect("sign");
    (cert, key)
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).expect("self-sign"), key)
}

/// A blocking TLS client: rustls over a std socket with timeouts.
pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens a TLS connection and completes its handshake.
pub trait Connect {
    /// Connects to `addr` with `config`, checking the certificate against
    /// `name`.
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>, name: &str) -> Self;
    /// Sends `close_notify`, the TLS half-close.
    fn close_notify(&mut self);
}

impl Connect for TlsClient {
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>, name: &str) -> Self {
        let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        sock.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from(name.to_string()).expect("server name");
        let conn = rustls::ClientConnection::new(config, name).expect("client session");
        let mut s = rustls::StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).expect("handshake");
        }
        s
    }

    fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
    }
}

/// Writes `msg` and reads as many bytes back.
pub fn tls_roundtrip(s: &mut TlsClient, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("tls write");
    s.flush().expect("tls flush");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("tls read");
    back
}

/// True when `path` names a file (for tests that skip without a tool).
pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// `path` as a string argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}
