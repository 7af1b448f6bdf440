//! What the endpoint is asked for, whichever way it was said: the YAML file
//! (the Prometheus exporter-toolkit's web configuration, a subset) or the
//! PROMETHEUS_SSL_* variables of gunicorn-prometheus-exporter. Each setting
//! keeps the name it was given under, so errors name the field or variable.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::Problem;

/// The endpoint's settings, not yet read from disk.
#[derive(Debug, Default, PartialEq)]
pub struct Spec {
    pub tls: Option<TlsSpec>,
    /// User name -> bcrypt hash; empty: no basic auth.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq)]
pub struct TlsSpec {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    /// Where `client_auth` was set, and where a client CA would be, for
    /// errors about them.
    pub client_auth_setting: &'static str,
    pub client_ca_setting: &'static str,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

/// PEM text in a file or inline, and the setting that gave it.
#[derive(Debug, PartialEq)]
pub struct Pem {
    pub setting: &'static str,
    pub from: PemFrom,
}

#[derive(Debug, PartialEq)]
pub enum PemFrom {
    File(PathBuf),
    Inline(String),
}

/// Go's crypto/tls client authentication policies, as the toolkit names them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    /// Asks for a certificate, takes none or any (not verified).
    RequestClientCert,
    /// Wants a certificate, any (not verified).
    RequireAnyClientCert,
    /// Takes none, or one that chains to the client CA.
    VerifyClientCertIfGiven,
    /// Wants one that chains to the client CA: the only secure choice.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// Whether certificates are checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// rustls speaks TLS 1.2 and 1.3 only.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    TLS12,
    TLS13,
}

/// The YAML file, as written. Unknown fields are errors that name them (the
/// toolkit's fields this exporter does not implement included: ignoring
/// `client_allowed_sans` or `rate_limit` would be a silent hole).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebFile {
    tls_server_config: Option<TlsServerConfig>,
    #[serde(rename = "http_server_config")]
    _http_server_config: Option<HttpServerConfig>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: Option<PathBuf>,
    cert: Option<String>,
    key_file: Option<PathBuf>,
    key: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    client_auth_type: Option<ClientAuth>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
}

/// Accepted so that a file shared with other exporters loads; this endpoint
/// speaks HTTP/1.1 only, which every Prometheus speaks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    #[serde(rename = "http2")]
    _http2: Option<bool>,
}

impl Spec {
    /// Parses the web configuration file's text; relative paths in it are
    /// relative to `dir`, the file's directory (as with the toolkit).
    pub fn from_yaml(text: &str, dir: &Path) -> Result<Spec, Problem> {
        // An empty file (or only comments) is a null document: no settings.
        let file: WebFile = serde_norway::from_str::<Option<WebFile>>(text)
            .map_err(Problem::Yaml)?
            .unwrap_or_default();
        Ok(Spec {
            tls: file
                .tls_server_config
                .map(|t| t.resolve(dir))
                .transpose()?
                .flatten(),
            users: file.basic_auth_users.unwrap_or_default(),
        })
    }

    /// gunicorn-prometheus-exporter's variables, read through `var` (empty
    /// counts as unset, as there). None when they configure nothing.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Spec>, Problem> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if var(CAPATH).is_some() {
            return Err(Problem::setting(
                CAPATH,
                "not supported: put the CA certificates in one PEM file and name it in PROMETHEUS_SSL_CLIENT_CAFILE",
            ));
        }
        let required = auth_required(var)?;
        let (cert, key) = match (var(CERTFILE), var(KEYFILE)) {
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(Problem::setting(
                    KEYFILE,
                    "missing (PROMETHEUS_SSL_CERTFILE is set)",
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::setting(
                    CERTFILE,
                    "missing (PROMETHEUS_SSL_KEYFILE is set)",
                ));
            }
            (None, None) => {
                return match configured_by(var)? {
                    Some(set) => Err(Problem::setting(
                        set,
                        "needs PROMETHEUS_SSL_CERTFILE and PROMETHEUS_SSL_KEYFILE too",
                    )),
                    None => Ok(None),
                };
            }
        };
        let client_ca = var(CAFILE);
        // The plugin loads the CA but never asks for a certificate unless
        // required; here a CA given is enforced on any certificate presented.
        let client_auth = match (required, &client_ca) {
            (true, _) => ClientAuth::RequireAndVerifyClientCert,
            (false, Some(_)) => ClientAuth::VerifyClientCertIfGiven,
            (false, None) => ClientAuth::NoClientCert,
        };
        Ok(Some(Spec {
            tls: Some(TlsSpec {
                cert: Pem::file(CERTFILE, cert),
                key: Pem::file(KEYFILE, key),
                client_ca: client_ca.map(|ca| Pem::file(CAFILE, ca)),
                client_auth,
                client_auth_setting: AUTH_REQUIRED,
                client_ca_setting: CAFILE,
                min_version: TlsVersion::TLS12,
                max_version: TlsVersion::TLS13,
            }),
            users: BTreeMap::new(),
        }))
    }
}

/// The first variable that asks for something (a false
/// PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED asks for nothing).
pub fn configured_by(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<&'static str>, Problem> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(set) = [CERTFILE, KEYFILE, CAFILE, CAPATH]
        .into_iter()
        .find(|name| var(name).is_some())
    {
        return Ok(Some(set));
    }
    Ok(auth_required(var)?.then_some(AUTH_REQUIRED))
}

fn auth_required(var: impl Fn(&str) -> Option<String>) -> Result<bool, Problem> {
    match var(AUTH_REQUIRED)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        // The plugin's spellings of true; false is anything else there, but a
        // typo here should not quietly turn client authentication off.
        Some("true" | "1" | "yes" | "on") => Ok(true),
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(Problem::setting(
            AUTH_REQUIRED,
            format!("`{other}` is neither true nor false"),
        )),
    }
}

pub const CERTFILE: &str = "PROMETHEUS_SSL_CERTFILE";
pub const KEYFILE: &str = "PROMETHEUS_SSL_KEYFILE";
pub const CAFILE: &str = "PROMETHEUS_SSL_CLIENT_CAFILE";
pub const CAPATH: &str = "PROMETHEUS_SSL_CLIENT_CAPATH";
pub const AUTH_REQUIRED: &str = "PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED";

impl Pem {
    fn file(setting: &'static str, path: impl Into<PathBuf>) -> Pem {
        Pem {
            setting,
            from: PemFrom::File(path.into()),
        }
    }
}

impl TlsServerConfig {
    /// None when nothing in it turns TLS on (the toolkit then serves plain
    /// HTTP: only the versions were given, say).
    fn resolve(self, dir: &Path) -> Result<Option<TlsSpec>, Problem> {
        let pem = |file: Option<PathBuf>,
                   inline: Option<String>,
                   names: (&'static str, &'static str)|
         -> Result<Option<Pem>, Problem> {
            match (file, inline) {
                (Some(_), Some(_)) => Err(Problem::setting(
                    "tls_server_config",
                    format!("give {} or {}, not both", names.0, names.1),
                )),
                (Some(path), None) => Ok(Some(Pem {
                    setting: names.0,
                    from: PemFrom::File(dir.join(path)),
                })),
                (None, Some(text)) => Ok(Some(Pem {
                    setting: names.1,
                    from: PemFrom::Inline(text),
                })),
                (None, None) => Ok(None),
            }
        };
        let cert = pem(
            self.cert_file,
            self.cert,
            ("tls_server_config.cert_file", "tls_server_config.cert"),
        )?;
        let key = pem(
            self.key_file,
            self.key,
            ("tls_server_config.key_file", "tls_server_config.key"),
        )?;
        let client_ca = pem(
            self.client_ca_file,
            self.client_ca,
            (
                "tls_server_config.client_ca_file",
                "tls_server_config.client_ca",
            ),
        )?;
        if cert.is_none() && key.is_none() && client_ca.is_none() && self.client_auth_type.is_none()
        {
            return Ok(None);
        }
        let cert = cert.ok_or_else(|| {
            Problem::setting(
                "tls_server_config.cert_file",
                "missing (or give cert, inline)",
            )
        })?;
        let key = key.ok_or_else(|| {
            Problem::setting(
                "tls_server_config.key_file",
                "missing (or give key, inline)",
            )
        })?;
        let min_version = self.min_version.unwrap_or(TlsVersion::TLS12);
        let max_version = self.max_version.unwrap_or(TlsVersion::TLS13);
        if min_version > max_version {
            return Err(Problem::setting(
                "tls_server_config.min_version",
                format!("{min_version:?} is above max_version {max_version:?}"),
            ));
        }
        Ok(Some(TlsSpec {
            cert,
            key,
            client_ca,
            client_auth: self.client_auth_type.unwrap_or_default(),
            client_auth_setting: "tls_server_config.client_auth_type",
            client_ca_setting: "tls_server_config.client_ca_file",
            min_version,
            max_version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Spec, String> {
        Spec::from_yaml(text, Path::new("/etc/exporter")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_no_settings() {
        assert_eq!(yaml("").unwrap(), Spec::default());
        assert_eq!(yaml("# nothing yet\n").unwrap(), Spec::default());
        assert_eq!(yaml("basic_auth_users:\n").unwrap(), Spec::default());
        // Versions alone turn nothing on, as with the toolkit.
        assert!(
            yaml("tls_server_config:\n  min_version: TLS13\n")
                .unwrap()
                .tls
                .is_none()
        );
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let spec = yaml(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca: inline\n  min_version: TLS13\n\
             http_server_config:\n  http2: false\n",
        )
        .unwrap();
        let tls = spec.tls.unwrap();
        assert_eq!(
            tls.cert.from,
            PemFrom::File("/etc/exporter/server.crt".into())
        );
        assert_eq!(tls.key.from, PemFrom::File("/abs/server.key".into()));
        assert_eq!(
            tls.client_ca.unwrap().setting,
            "tls_server_config.client_ca"
        );
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::TLS13, TlsVersion::TLS13)
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        let e = yaml("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(
            e.contains("unknown field `cert_fil`") && e.contains("tls_server_config"),
            "{e}"
        );
        let e = yaml("rate_limit:\n  burst: 2\n").unwrap_err();
        assert!(e.contains("unknown field `rate_limit`"), "{e}");
        let e = yaml("tls_server_config:\n  client_auth_type: RequireCert\n").unwrap_err();
        assert!(
            e.contains("client_auth_type") && e.contains("RequireCert"),
            "{e}"
        );
        let e = yaml("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n")
            .unwrap_err();
        assert!(e.contains("min_version") && e.contains("TLS11"), "{e}");
        let e = yaml("tls_server_config:\n  key_file: b\n").unwrap_err();
        assert!(e.contains("tls_server_config.cert_file: missing"), "{e}");
        let e = yaml("tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: c\n").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = yaml("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n")
            .unwrap_err();
        assert!(e.contains("tls_server_config.min_version"), "{e}");
    }

    fn env(vars: &[(&str, &str)]) -> Result<Option<Spec>, String> {
        Spec::from_env(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn env_vars_map_onto_the_same_settings() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[(CERTFILE, ""), (KEYFILE, "")]).unwrap(), None);
        assert_eq!(env(&[(AUTH_REQUIRED, "false")]).unwrap(), None);
        let tls = |vars| env(vars).unwrap().unwrap().tls.unwrap();
        let plain = tls(&[(CERTFILE, "/c"), (KEYFILE, "/k")]);
        assert_eq!(plain.client_auth, ClientAuth::NoClientCert);
        assert_eq!(plain.cert.from, PemFrom::File("/c".into()));
        let given = tls(&[(CERTFILE, "/c"), (KEYFILE, "/k"), (CAFILE, "/ca")]);
        assert_eq!(given.client_auth, ClientAuth::VerifyClientCertIfGiven);
        let required = tls(&[
            (CERTFILE, "/c"),
            (KEYFILE, "/k"),
            (CAFILE, "/ca"),
            (AUTH_REQUIRED, "True"),
        ]);
        assert_eq!(required.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(required.client_ca.unwrap().setting, CAFILE);
    }

    #[test]
    fn env_var_mistakes_name_the_variable() {
        let e = env(&[(CERTFILE, "/c")]).unwrap_err();
        assert!(e.starts_with(KEYFILE), "{e}");
        let e = env(&[(CAFILE, "/ca")]).unwrap_err();
        assert!(e.starts_with(CAFILE), "{e}");
        let e = env(&[(AUTH_REQUIRED, "yes")]).unwrap_err();
        assert!(e.starts_with(AUTH_REQUIRED), "{e}");
        let e = env(&[(CERTFILE, "/c"), (KEYFILE, "/k"), (AUTH_REQUIRED, "ture")]).unwrap_err();
        assert!(e.starts_with(AUTH_REQUIRED) && e.contains("ture"), "{e}");
        let e = env(&[(CERTFILE, "/c"), (KEYFILE, "/k"), (CAPATH, "/cas")]).unwrap_err();
        assert!(e.starts_with(CAPATH), "{e}");
    }
}
