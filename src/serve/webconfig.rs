//! `--web-config FILE`: the web configuration file of the Prometheus
//! exporter-toolkit (its `docs/web-configuration.md`), so that one file
//! serves node_exporter and cwdiag alike.
//!
//! Supported: `tls_server_config` (`cert_file`/`cert`, `key_file`/`key`,
//! `client_ca_file`/`client_ca`, `client_auth_type`, `min_version`,
//! `max_version`, `prefer_server_cipher_suites`), `http_server_config`
//! (`headers`; `http2` is accepted and has no effect: cwdiag speaks
//! HTTP/1.x) and `basic_auth_users` (bcrypt hashes). Settings cwdiag cannot
//! honour (`client_allowed_sans`, `cipher_suites`, `curve_preferences`,
//! `rate_limit`, and the client auth types that accept certificates no CA
//! signed) are refused rather than silently ignored. Unknown keys are
//! errors, as in the toolkit's strict YAML decoding. Relative paths are
//! relative to the directory of the configuration file. The file is read
//! once at start.
//!
//! [`parse`] is pure (bytes in, settings out); [`load`] reads the files it
//! names and builds the TLS and authentication state.

use super::auth::Users;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest configuration, certificate or key file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Highest bcrypt cost accepted: each wrong password costs one verify at
/// this cost (cost 14 is about a second of CPU), and a higher one would
/// let a few bad requests occupy the password checker for minutes.
pub const MAX_BCRYPT_COST: u32 = 14;

/// A refused configuration: the field (dotted path, empty for the file as
/// a whole) and what is wrong with it, on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: one_line(&message.into()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// Where PEM text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// `client_auth_type`, as far as rustls can verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, but one that
    /// is sent must chain to the client CA.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub prefer_server_order: bool,
}

/// A checked configuration; files are not read yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name -> bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

/// Response headers the toolkit allows in `http_server_config.headers`.
const HEADER_NAMES: [&str; 5] = [
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

/// Parses and checks a configuration. `dir` is the directory of the file,
/// against which relative paths are resolved.
pub fn parse(text: &[u8], dir: &Path) -> Result<WebConfig, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| err("", format!("not UTF-8 ({e})")))?;
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Option<RawConfig>>(de) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                // The YAML error names the enclosing mapping itself.
                let message = e.into_inner().to_string();
                let message = match message.split_once(": ") {
                    Some((at, rest)) if !path.is_empty() && path.starts_with(at) => {
                        rest.to_string()
                    }
                    _ => message,
                };
                return Err(err(&path, message));
            }
        }
    };
    if raw.rate_limit.is_some() {
        return Err(err("rate_limit", "not supported by cwdiag"));
    }
    let tls = match raw.tls_server_config {
        Some(t) => tls_settings(t, dir)?,
        None => None,
    };
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        let field = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err(err(
                "basic_auth_users",
                "a user name must be non-empty, without ':' or control characters",
            ));
        }
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|_| err(&field, "not a bcrypt hash (expected e.g. $2y$10$...)"))?;
        let cost = parts.get_cost();
        if cost > MAX_BCRYPT_COST {
            return Err(err(
                &field,
                format!(
                    "bcrypt cost {cost} is above {MAX_BCRYPT_COST}: every wrong password would cost that much CPU"
                ),
            ));
        }
        users.insert(user, hash);
    }
    let mut headers = Vec::new();
    if let Some(http) = raw.http_server_config {
        let _ = http.http2; // accepted: cwdiag speaks HTTP/1.x only
        for (name, value) in http.headers.unwrap_or_default() {
            let field = format!("http_server_config.headers.{name}");
            let Some(canon) = HEADER_NAMES.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                return Err(err(
                    &field,
                    format!("not one of {}", HEADER_NAMES.join(", ")),
                ));
            };
            if value.is_empty() {
                continue;
            }
            if hyper::header::HeaderValue::from_str(&value).is_err() {
                return Err(err(&field, "not a valid header value"));
            }
            let lower = value.to_ascii_lowercase();
            if *canon == "X-Frame-Options" && lower != "deny" && lower != "sameorigin" {
                return Err(err(&field, "must be deny or sameorigin"));
            }
            if *canon == "X-Content-Type-Options" && lower != "nosniff" {
                return Err(err(&field, "must be nosniff"));
            }
            headers.push(((*canon).to_string(), value));
        }
    }
    Ok(WebConfig {
        tls,
        users,
        headers,
    })
}

/// An empty string is an unset setting, as in the toolkit.
fn set(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn pem_source(
    inline: Option<String>,
    file: Option<String>,
    inline_name: &str,
    file_name: &str,
    dir: &Path,
) -> Result<Option<Pem>, ConfigError> {
    match (set(inline), set(file)) {
        (Some(_), Some(_)) => Err(err(
            &format!("tls_server_config.{file_name}"),
            format!("give {inline_name} or {file_name}, not both"),
        )),
        (Some(text), None) => Ok(Some(Pem::Inline(text))),
        (None, Some(path)) => Ok(Some(Pem::File(dir.join(path)))),
        (None, None) => Ok(None),
    }
}

fn tls_version(
    v: Option<String>,
    field: &str,
    default: TlsVersion,
) -> Result<TlsVersion, ConfigError> {
    match set(v).as_deref() {
        None => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some("TLS10" | "TLS11") => Err(err(
            &format!("tls_server_config.{field}"),
            "TLS 1.0 and 1.1 are not supported (rustls speaks TLS12 and TLS13)",
        )),
        Some(other) => Err(err(
            &format!("tls_server_config.{field}"),
            format!("unknown TLS version {other:?} (expected TLS12 or TLS13)"),
        )),
    }
}

fn tls_settings(t: RawTls, dir: &Path) -> Result<Option<TlsSettings>, ConfigError> {
    let refused = [
        (
            "client_allowed_sans",
            t.client_allowed_sans
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
        ),
        (
            "cipher_suites",
            t.cipher_suites.as_ref().is_some_and(|v| !v.is_empty()),
        ),
        (
            "curve_preferences",
            t.curve_preferences.as_ref().is_some_and(|v| !v.is_empty()),
        ),
    ];
    if let Some((name, _)) = refused.iter().find(|(_, given)| *given) {
        return Err(err(
            &format!("tls_server_config.{name}"),
            "not supported by cwdiag (rustls chooses cipher suites and curves)",
        ));
    }
    let cert = pem_source(t.cert, t.cert_file, "cert", "cert_file", dir)?;
    let key = pem_source(t.key, t.key_file, "key", "key_file", dir)?;
    let client_ca = pem_source(
        t.client_ca,
        t.client_ca_file,
        "client_ca",
        "client_ca_file",
        dir,
    )?;
    let client_auth = match set(t.client_auth_type).as_deref() {
        None | Some("NoClientCert") => ClientAuth::None,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::Require,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert")) => {
            return Err(err(
                "tls_server_config.client_auth_type",
                format!(
                    "{other} accepts certificates no CA signed and is not supported: use RequireAndVerifyClientCert"
                ),
            ));
        }
        Some(other) => {
            return Err(err(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown value {other:?} (expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    match (client_auth, &client_ca) {
        (ClientAuth::None, Some(_)) => {
            return Err(err(
                "tls_server_config.client_auth_type",
                "a client CA is given but client_auth_type is NoClientCert",
            ));
        }
        (ClientAuth::VerifyIfGiven | ClientAuth::Require, None) => {
            return Err(err(
                "tls_server_config.client_ca_file",
                "client_auth_type needs a client CA to verify against",
            ));
        }
        _ => {}
    }
    let min_version = tls_version(t.min_version, "min_version", TlsVersion::Tls12)?;
    let max_version = tls_version(t.max_version, "max_version", TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(err("tls_server_config.min_version", "is above max_version"));
    }
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if client_ca.is_none() => return Ok(None),
        (None, _) => return Err(err("tls_server_config.cert_file", "missing")),
        (_, None) => return Err(err("tls_server_config.key_file", "missing")),
    };
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        min_version,
        max_version,
        prefer_server_order: t.prefer_server_cipher_suites.unwrap_or(true),
    }))
}

/// A configuration with its files read: what the exporter runs with.
pub struct Loaded {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub users: Option<Arc<Users>>,
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

/// Reads at most [`MAX_FILE_BYTES`] of a regular file, never blocking on a
/// FIFO or device.
pub fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let f = std::fs::File::from(fd);
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} bytes",
            MAX_FILE_BYTES
        )));
    }
    Ok(buf)
}

fn pem_bytes(p: &Pem, field: &str) -> Result<Vec<u8>, ConfigError> {
    match p {
        Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
        Pem::File(path) => {
            read_capped(path).map_err(|e| err(field, format!("{}: {e}", path.display())))
        }
    }
}

fn pem_name(p: &Pem, field: &str) -> String {
    match p {
        Pem::File(path) => format!("{field} {}", path.display()),
        Pem::Inline(_) => field.to_string(),
    }
}

fn certs(
    p: &Pem,
    field: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bytes = pem_bytes(p, field)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&pem_name(p, field), format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(err(&pem_name(p, field), "no CERTIFICATE block found"));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Reads the certificate, key and client CA and builds the rustls
    /// server configuration (ring provider; ALPN `http/1.1`).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, ConfigError> {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
        let cert_field = match &self.cert {
            Pem::File(_) => "tls_server_config.cert_file",
            Pem::Inline(_) => "tls_server_config.cert",
        };
        let key_field = match &self.key {
            Pem::File(_) => "tls_server_config.key_file",
            Pem::Inline(_) => "tls_server_config.key",
        };
        let chain = certs(&self.cert, cert_field)?;
        let key_bytes = pem_bytes(&self.key, key_field)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            err(
                &pem_name(&self.key, key_field),
                format!("no usable private key ({e})"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
            (TlsVersion::Tls12, &rustls::version::TLS12),
            (TlsVersion::Tls13, &rustls::version::TLS13),
        ]
        .into_iter()
        .filter(|(v, _)| (self.min_version..=self.max_version).contains(v))
        .map(|(_, p)| p)
        .collect();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|e| err("tls_server_config.min_version", e.to_string()))?;
        let builder = match (&self.client_ca, self.client_auth) {
            (Some(ca), auth @ (ClientAuth::Require | ClientAuth::VerifyIfGiven)) => {
                let field = match ca {
                    Pem::File(_) => "tls_server_config.client_ca_file",
                    Pem::Inline(_) => "tls_server_config.client_ca",
                };
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca, field)? {
                    roots
                        .add(c)
                        .map_err(|e| err(&pem_name(ca, field), format!("unusable CA ({e})")))?;
                }
                let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                );
                if auth == ClientAuth::VerifyIfGiven {
                    v = v.allow_unauthenticated();
                }
                let verifier = v
                    .build()
                    .map_err(|e| err(&pem_name(ca, field), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
            err(
                &pem_name(&self.key, key_field),
                format!("does not fit the certificate ({e})"),
            )
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        cfg.ignore_client_order = self.prefer_server_order;
        Ok(cfg)
    }
}

/// Reads `path`, checks it and reads the files it names. The error is one
/// line naming the file and the field.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let named = |e: ConfigError| anyhow::anyhow!("--web-config {}: {e}", path.display());
    let text =
        read_capped(path).map_err(|e| anyhow::anyhow!("--web-config {}: {e}", path.display()))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let cfg = parse(&text, &dir).map_err(named)?;
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(t.server_config().map_err(named)?)),
        None => None,
    };
    let users = if cfg.users.is_empty() {
        None
    } else {
        Some(Arc::new(Users::new(cfg.users.clone())?))
    };
    let headers = cfg
        .headers
        .iter()
        .map(|(n, v)| {
            Ok((
                hyper::header::HeaderName::from_bytes(n.as_bytes())?,
                hyper::header::HeaderValue::from_str(v)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "--web-config {}: http_server_config.headers: {e}",
                path.display()
            )
        })?;
    Ok(Loaded {
        tls,
        users,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$2eRmaH/mS5dGTYRCOUP8guXpp8cmnV.pXQ44ldfYnnCFEe/ZY3jEe";

    fn p(text: &str) -> Result<WebConfig, ConfigError> {
        parse(text.as_bytes(), Path::new("/etc/cwdiag"))
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        assert_eq!(p("").unwrap(), WebConfig::default());
        assert_eq!(p("# nothing\n").unwrap(), WebConfig::default());
        assert_eq!(p("---\n").unwrap(), WebConfig::default());
    }

    #[test]
    fn the_toolkit_example_parses_with_paths_next_to_the_file() {
        let cfg = p(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\nbasic_auth_users:\n  alice: {HASH}\n"
        ))
        .unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/cwdiag/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls12, TlsVersion::Tls13)
        );
        assert_eq!(cfg.users.get("alice").map(String::as_str), Some(HASH));
    }

    #[test]
    fn client_ca_defaults_and_refusals_follow_the_toolkit() {
        let ok = p("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n  client_auth_type: RequireAndVerifyClientCert\n").unwrap();
        assert_eq!(ok.tls.unwrap().client_auth, ClientAuth::Require);
        let e = p("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n")
            .unwrap_err();
        assert_eq!(e.field, "tls_server_config.client_auth_type");
        let e = p("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n").unwrap_err();
        assert_eq!(e.field, "tls_server_config.client_ca_file");
        let e = p("tls_server_config:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n  client_auth_type: RequireAnyClientCert\n").unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                "tls_server_config:\n  cert_file: c\n",
                "tls_server_config.key_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n",
                "tls_server_config.min_version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "tls_server_config.cipher_suites",
            ),
            (
                "tls_server_config:\n  cert_fil: c\n",
                "tls_server_config.cert_fil",
            ),
            (
                "tls_server_config:\n  cert_file: [1]\n",
                "tls_server_config.cert_file",
            ),
            (
                "basic_auth_users:\n  alice: plain\n",
                "basic_auth_users.alice",
            ),
            (
                "basic_auth_users:\n  alice: $2y$15$2eRmaH/mS5dGTYRCOUP8guXpp8cmnV.pXQ44ldfYnnCFEe/ZY3jEe\n",
                "basic_auth_users.alice",
            ),
            ("rate_limit:\n  interval: 1s\n", "rate_limit"),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server",
            ),
        ];
        for (text, field) in cases {
            let e = p(text).unwrap_err();
            assert_eq!(e.field, field, "{text:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = p("foo: 1\n").unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
        assert!(p("\u{0}\u{ff}").is_err());
        assert!(parse(b"\xff\xfe", Path::new(".")).is_err());
    }

    #[test]
    fn headers_and_http2_are_accepted() {
        let cfg = p("http_server_config:\n  http2: true\n  headers:\n    x-frame-options: deny\n    Strict-Transport-Security: max-age=31536000\n").unwrap();
        assert_eq!(
            cfg.headers,
            vec![
                (
                    "Strict-Transport-Security".to_string(),
                    "max-age=31536000".to_string()
                ),
                ("X-Frame-Options".to_string(), "deny".to_string())
            ]
        );
    }

    #[test]
    fn load_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("web.yml");
        std::fs::write(
            &cfg,
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
        )
        .unwrap();
        let e = format!("{:#}", load(&cfg).err().unwrap());
        assert!(e.contains(&cfg.display().to_string()), "{e}");
        assert!(e.contains("tls_server_config.cert_file"), "{e}");
        assert!(
            e.contains(&dir.path().join("missing.crt").display().to_string()),
            "{e}"
        );
        let e = format!("{:#}", load(&dir.path().join("nope.yml")).err().unwrap());
        assert!(e.contains("nope.yml"), "{e}");
        let e = format!("{:#}", load(Path::new("/dev/zero")).err().unwrap());
        assert!(e.contains("not a regular file"), "{e}");
    }
}
