//! The PostgreSQL target: its URL (kept secret), connections, migrations.

use std::fmt;

use std::sync::Arc;

use nexus_migrations::{AppliedMigration, Dialect, Driver, Migrator};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// A PostgreSQL URL (`postgresql://user:password@host:port/db?...`). Its
/// `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct TargetUrl {
    url: String,
    config: tokio_postgres::Config,
}

impl TargetUrl {
    /// Parses `url`; the error message shows it without its password.
    pub fn parse(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::InvalidUrl {
                    url: redact(url),
                    reason: redact_in(&e.to_string(), url),
                })?;
        Ok(TargetUrl {
            url: url.to_string(),
            config,
        })
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// Opens a connection; its driver runs on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        let mut config = self.config.clone();
        if config.get_application_name().is_none() {
            config.application_name("nexus-sync");
        }
        // Errors of the connection task surface on the client's next call.
        if config.get_ssl_mode() == SslMode::Disable {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(Error::pg("connecting"))?;
            tokio::spawn(connection);
            return Ok(client);
        }
        let (client, connection) = config
            .connect(tls::connector()?)
            .await
            .map_err(Error::pg("connecting"))?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetUrl")
            .field("url", &self.redacted())
            .finish()
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// TLS through rustls, as libpq does it: `sslmode=prefer` (the default) and
/// `require` encrypt without checking the server's certificate; with
/// `PGSSLROOTCERT` (or `NEXUS_PG_SSLROOTCERT`) naming a PEM file of CA
/// certificates, the certificate and host name are verified against it.
mod tls {
    use super::*;
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    pub(super) fn connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(format!("TLS setup: {e}")))?;
        let ca = std::env::var("NEXUS_PG_SSLROOTCERT")
            .or_else(|_| std::env::var("PGSSLROOTCERT"))
            .ok();
        let config = match ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(&path)
                    .map_err(|e| tls_error(format!("reading CA certificates from {path}: {e}")))?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        tls_error(format!("reading CA certificates from {path}: {e}"))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_error(format!("CA certificate in {path}: {e}")))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    fn tls_error(message: String) -> Error {
        Error::InvalidUrl {
            url: "(TLS settings)".into(),
            reason: message,
        }
    }

    /// libpq's `sslmode=require`: the channel is encrypted and the handshake
    /// checked, but the certificate is not verified against a CA.
    #[derive(Debug)]
    struct EncryptOnly(Arc<CryptoProvider>);

    impl ServerCertVerifier for EncryptOnly {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
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
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`; also hides
/// `password=...` in key/value strings and query parameters.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    // password=... as a query parameter or key/value pair
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
    }
    out
}

/// Removes any occurrence of the URL's password from `text`.
fn redact_in(text: &str, url: &str) -> String {
    let redacted = redact(url);
    // Find the password by comparing the URL with its redacted form.
    let prefix = url
        .bytes()
        .zip(redacted.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = url
        .bytes()
        .rev()
        .zip(redacted.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    if prefix + suffix >= url.len() {
        return text.to_string();
    }
    let secret = &url[prefix..url.len() - suffix];
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

/// The key of the advisory lock held while migrating the schema.
const MIGRATION_LOCK: i64 = 0x6e65_7875_735f_6d67; // "nexus_mg"

/// Drives `nexus-migrations` on a PostgreSQL connection.
pub struct PgDriver<'a> {
    client: &'a mut Client,
}

impl<'a> PgDriver<'a> {
    /// A driver on `client`.
    pub fn new(client: &'a mut Client) -> Self {
        PgDriver { client }
    }
}

impl fmt::Debug for PgDriver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgDriver")
    }
}

/// A PostgreSQL error that displays the server's message and SQLSTATE.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::error::describe(&self.0))
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

impl Driver for PgDriver<'_> {
    type Error = PgError;

    async fn execute_batch(&mut self, sql: &str) -> Result<(), Self::Error> {
        Ok(self.client.batch_execute(sql).await?)
    }

    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, Self::Error> {
        let rows = self
            .client
            .query("SELECT version, name, checksum, applied_at FROM _nexus_migrations ORDER BY version", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| AppliedMigration {
                version: r.get::<_, i32>(0) as u32,
                name: r.get(1),
                checksum: r.get(2),
                applied_at: r.get(3),
            })
            .collect())
    }

    async fn record(&mut self, m: &AppliedMigration) -> Result<(), Self::Error> {
        self.client
            .execute(
                "INSERT INTO _nexus_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                &[&(m.version as i32), &m.name, &m.checksum, &m.applied_at],
            )
            .await
            .map(drop)
            .map_err(PgError)
    }

    async fn unrecord(&mut self, version: u32) -> Result<(), Self::Error> {
        self.client
            .execute(
                "DELETE FROM _nexus_migrations WHERE version = $1",
                &[&(version as i32)],
            )
            .await
            .map(drop)
            .map_err(PgError)
    }

    async fn begin(&mut self) -> Result<(), Self::Error> {
        Ok(self.client.batch_execute("BEGIN").await?)
    }

    async fn commit(&mut self) -> Result<(), Self::Error> {
        Ok(self.client.batch_execute("COMMIT").await?)
    }

    async fn rollback(&mut self) -> Result<(), Self::Error> {
        Ok(self.client.batch_execute("ROLLBACK").await?)
    }

    async fn lock(&mut self) -> Result<(), Self::Error> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map(drop)
            .map_err(PgError)
    }

    async fn unlock(&mut self) -> Result<(), Self::Error> {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map(drop)
            .map_err(PgError)
    }

    fn now_micros(&self) -> i64 {
        nexus_core::Timestamp::now().as_micros()
    }
}

/// Brings the target's schema to head (under the advisory lock); returns the versions applied.
pub async fn migrate_target(client: &mut Client) -> Result<Vec<u32>> {
    Ok(Migrator::new(Dialect::Postgres)
        .up(&mut PgDriver::new(client), None)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_shown() {
        let cases = [
            (
                "postgresql://u:s3cret@localhost:5432/db",
                "postgresql://u:***@localhost:5432/db",
            ),
            (
                "postgres://u:p%40ss@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            (
                "postgresql://h/db?user=u&password=s3cret&x=1",
                "postgresql://h/db?user=u&password=***&x=1",
            ),
            (
                "host=h user=u password=s3cret dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want);
        }
        let t = TargetUrl::parse("postgresql://u:s3cret@localhost:5432/db").unwrap();
        assert!(!format!("{t:?} {t}").contains("s3cret"));
        let err = TargetUrl::parse("postgresql://u:s3cret@localhost:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
