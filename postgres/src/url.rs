//! A PostgreSQL URL that never shows its password, and connecting with it.

use std::fmt;

use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use crate::error::{Error, Result};

/// A PostgreSQL URL (`postgresql://user:password@host:port/db?...`, or a
/// libpq key/value string). Its `Debug` and `Display` never show the
/// password, and neither do the errors of parsing it.
#[derive(Clone)]
pub struct PgUrl {
    url: String,
    config: tokio_postgres::Config,
}

impl PgUrl {
    /// Parses `url`; the error message shows it without its password.
    pub fn parse(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::InvalidUrl {
                    url: redact(url),
                    reason: redact_in(&e.to_string(), url),
                })?;
        Ok(PgUrl {
            url: url.to_string(),
            config,
        })
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// Opens a connection that reports `application_name` to the server
    /// (unless the URL names one itself) and, when `statement_timeout` is
    /// given, has that `statement_timeout` from its first statement on.
    /// The connection's driver runs on the current tokio runtime; its
    /// errors surface on the client's next call.
    pub async fn connect(
        &self,
        application_name: &str,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Client> {
        let mut config = self.config.clone();
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        if let Some(t) = statement_timeout {
            let mut options = config.get_options().unwrap_or_default().to_string();
            options.push_str(&format!(" -c statement_timeout={}", t.as_millis()));
            config.options(options.trim());
        }
        if config.get_ssl_mode() == SslMode::Disable {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|source| Error::Connect { source })?;
            tokio::spawn(connection);
            return Ok(client);
        }
        let (client, connection) = config
            .connect(crate::tls::connector()?)
            .await
            .map_err(|source| Error::Connect { source })?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("url", &self.redacted())
            .finish()
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
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
        let t = PgUrl::parse("postgresql://u:s3cret@localhost:5432/db").unwrap();
        assert!(!format!("{t:?} {t}").contains("s3cret"));
        let err = PgUrl::parse("postgresql://u:s3cret@localhost:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
