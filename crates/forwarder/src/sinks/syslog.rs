//! RFC 5424 syslog: over TCP with octet-counting framing (RFC 6587), over TLS (RFC 5425, same
//! framing), or over UDP (RFC 5426, one message per datagram). The record is the JSON MSG;
//! APP-NAME `oprelay`, MSGID the log type. A broken connection is re-opened on the next send,
//! and one the receiver closed is noticed before a batch is written into it.

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use oprelay_service::config::{SinkConfig, SyslogConfig, Transport};

use super::{Outcome, SetupError, SinkError};
use oprelay_format::Record;

/// facility 10 (security/authorization) × 8 + severity 6 (informational).
const PRI: u8 = 86;
/// Largest MSG a UDP datagram carries safely.
const UDP_MAX: usize = 65_000;
/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long writing one batch may take: a receiver that stops reading must not hold the
/// delivery for ever.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Udp(UdpSocket),
}

pub struct Syslog {
    address: String,
    transport: Transport,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    hostname: String,
    conn: Arc<Mutex<Option<Conn>>>,
}

fn tls_connector(
    config: &SinkConfig,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), SetupError> {
    oprelay_bus::install_crypto_provider();
    let tls = &config.tls;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.ca_file {
        let bad_ca = |e: &dyn std::fmt::Display| {
            SetupError::invalid("tls.ca_file", format!("{}: {e}", ca.display()))
        };
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad_ca(&e))? {
            roots
                .add(cert.map_err(|e| bad_ca(&e))?)
                .map_err(|e| bad_ca(&e))?;
        }
    } else if tls.verify {
        return Err(SetupError::invalid(
            "tls.ca_file",
            "missing: syslog over TLS needs the CA that signed the receiver's certificate",
        ));
    }
    let builder = ClientConfig::builder();
    let builder = if tls.verify {
        builder.with_root_certificates(roots)
    } else {
        tracing::warn!(sink = %config.name, "TLS certificate verification is OFF for this sink (tls.verify = false)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
    };
    let client = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            let certs = CertificateDer::pem_file_iter(c)
                .map_err(|e| SetupError::invalid("tls.cert_file", e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SetupError::invalid("tls.cert_file", e))?;
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| SetupError::invalid("tls.key_file", e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SetupError::invalid("tls.cert_file", e))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        SetupError::invalid("address", format!("`{host}` is not a host name for TLS"))
    })?;
    Ok((TlsConnector::from(Arc::new(client)), name))
}

/// For `tls.verify = false` only, which the operator wrote out and the log shows.
#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// HOSTNAME: printable US-ASCII, at most 255 characters, `-` when unknown.
fn header_hostname() -> String {
    let h: String = std::env::var("HOSTNAME")
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if h.is_empty() {
        "-".into()
    } else {
        h
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, with the UTF-8
/// BOM that marks a UTF-8 MSG.
pub fn message(r: &Record, hostname: &str) -> Vec<u8> {
    let t = r.event_time;
    // RFC 5424 allows at most six fractional digits.
    let ts = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
    let mut m = format!("<{PRI}>1 {ts} {hostname} oprelay - {} - ", r.log_type).into_bytes();
    m.extend_from_slice("\u{feff}".as_bytes());
    m.extend_from_slice(&r.body);
    m
}

impl Syslog {
    pub fn new(config: &SinkConfig, syslog: &SyslogConfig) -> Result<Syslog, SetupError> {
        let address = syslog.address.clone();
        let transport = syslog.transport;
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .ok_or_else(|| SetupError::invalid("address", "must be host:port"))?;
        let tls = (transport == Transport::Tls)
            .then(|| tls_connector(config, host))
            .transpose()?;
        Ok(Syslog {
            address,
            transport,
            tls,
            hostname: header_hostname(),
            conn: Arc::new(Mutex::new(None)),
        })
    }

    async fn connect(&self) -> Result<Conn, SinkError> {
        let fail = |e: std::io::Error| {
            SinkError::transient(format!(
                "cannot reach syslog receiver {}: {e}",
                self.address
            ))
        };
        Ok(match self.transport {
            Transport::Udp => {
                // Prefer IPv4 when the name has both (a receiver on 127.0.0.1 is the common
                // case, and a datagram to the wrong family vanishes without an error).
                let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&self.address)
                    .await
                    .map_err(fail)?
                    .collect();
                let addr = addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(addrs.first())
                    .copied()
                    .ok_or_else(|| {
                        SinkError::transient(format!("{} resolves to no address", self.address))
                    })?;
                let local = if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let sock = UdpSocket::bind(local).await.map_err(fail)?;
                sock.connect(addr).await.map_err(fail)?;
                Conn::Udp(sock)
            }
            Transport::Tcp => Conn::Tcp(TcpStream::connect(&self.address).await.map_err(fail)?),
            Transport::Tls => {
                let tcp = TcpStream::connect(&self.address).await.map_err(fail)?;
                let Some((connector, name)) = &self.tls else {
                    return Err(SinkError::needs_operator(
                        "TLS transport without TLS settings",
                    ));
                };
                Conn::Tls(Box::new(
                    connector.connect(name.clone(), tcp).await.map_err(|e| {
                        SinkError::transient(format!(
                            "TLS handshake with {} failed: {e}",
                            self.address
                        ))
                    })?,
                ))
            }
        })
    }

    /// `oprelay config check --online`: a connection (and TLS handshake) to the receiver,
    /// closed at once. UDP has no handshake, so only the address is resolved.
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| {
                SinkError::transient(format!("connecting to {} timed out", self.address))
            })??;
        drop(conn);
        Ok(match self.transport {
            Transport::Udp => format!(
                "{} resolves (UDP: nothing to check beyond that)",
                self.address
            ),
            Transport::Tcp => format!("{} accepts TCP connections", self.address),
            Transport::Tls => format!("{} completed a TLS handshake", self.address),
        })
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let mut guard = self.conn.lock().await;
        // A connection the receiver closed (a restart) still takes writes into the kernel's
        // buffer without an error, and the batch would count as delivered and be lost: look
        // before writing into it.
        if guard.as_mut().is_some_and(|c| !c.is_open()) {
            tracing::info!(address = %self.address, "the syslog receiver closed the connection; reconnecting");
            *guard = None;
        }
        if guard.is_none() {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
                .await
                .map_err(|_| {
                    SinkError::transient(format!(
                        "connecting to syslog receiver {} timed out after {CONNECT_TIMEOUT:?}",
                        self.address
                    ))
                })??;
            *guard = Some(connected);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(SinkError::transient("no connection"));
        };
        let mut rejected = Vec::new();
        let result = match conn {
            Conn::Udp(sock) => {
                let mut r = Ok(());
                for (i, rec) in records.iter().enumerate() {
                    let m = message(rec, &self.hostname);
                    if m.len() > UDP_MAX {
                        rejected.push((
                            i,
                            format!(
                                "{} bytes is more than a UDP syslog datagram carries ({UDP_MAX})",
                                m.len()
                            ),
                        ));
                        continue;
                    }
                    if let Err(e) = sock.send(&m).await {
                        r = Err(e);
                        break;
                    }
                }
                r
            }
            Conn::Tcp(s) => timed(write_framed(s, records, &self.hostname)).await,
            Conn::Tls(s) => timed(write_framed(s.as_mut(), records, &self.hostname)).await,
        };
        if let Err(e) = result {
            *guard = None;
            return Err(SinkError::transient(format!(
                "syslog write to {} failed: {e}",
                self.address
            )));
        }
        if rejected.is_empty() {
            Ok(Outcome::Delivered)
        } else {
            Ok(Outcome::Partial {
                retry: vec![],
                rejected,
            })
        }
    }
}

impl Syslog {
    /// Closes the connection cleanly: TLS `close_notify` as RFC 5425 asks, TCP FIN.
    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            match conn {
                Conn::Tcp(mut s) => {
                    let _ = s.shutdown().await;
                }
                Conn::Tls(mut s) => {
                    let _ = s.shutdown().await;
                }
                Conn::Udp(_) => {}
            }
        }
    }
}

impl Conn {
    /// Whether a stream connection is still open: one read, polled once and never waited for.
    /// A syslog receiver sends no application data, so a read that completes — end of stream,
    /// a TLS `close_notify`, data, an error — means the receiver is closing or gone; a read
    /// that would wait means the connection is open. Through TLS the read also takes in what
    /// the TLS layer itself receives (TLS 1.3 session tickets) without mistaking it for data.
    /// UDP has no connection to lose.
    fn is_open(&mut self) -> bool {
        use futures::FutureExt;
        use tokio::io::AsyncReadExt;
        let mut probe = [0u8; 1];
        let read = match self {
            Conn::Tcp(s) => s.read(&mut probe).now_or_never(),
            Conn::Tls(s) => s.read(&mut probe).now_or_never(),
            Conn::Udp(_) => return true,
        };
        read.is_none()
    }
}

/// A write bounded by [`WRITE_TIMEOUT`].
async fn timed(
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no progress for {WRITE_TIMEOUT:?}"),
            ))
        })
}

/// Octet counting: `MSG-LEN SP SYSLOG-MSG`, safe for messages with any bytes in them.
async fn write_framed<W: AsyncWrite + Unpin>(
    w: &mut W,
    records: &[&Record],
    hostname: &str,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for r in records {
        let m = message(r, hostname);
        buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
        buf.extend_from_slice(&m);
    }
    w.write_all(&buf).await?;
    w.flush().await
}
