//! TLS, client certificates and basic auth on /metrics: `--web.config.file`
//! (the Prometheus exporter-toolkit format) and the PROMETHEUS_SSL_*
//! variables, against a real Gunicorn, scraped by a real TLS client
//! (rustls), with certificates made here (rcgen): a CA, the server's
//! certificate, a client certificate the CA signed and one another CA signed.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use integration_tests::{
    Exporter, ExporterBuilder, ExporterExit, Gunicorn, Metrics, Prometheus, TestDir, Version,
    fixtures::exporter::SCRAPE_TIMEOUT, http,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-s3cret";
/// bcrypt of PASSWORD at cost 10, as `htpasswd -nBC 10` writes it (`$2y$`).
const HASH: &str = "$2y$10$UcpeYaFzlj9YXKKmAEeqz.do1y4eMzxIqVkt617HZw9Or5o8mcmPO";

/// Certificates on disk (ca.crt, server.crt, server.key, client.crt,
/// client.key, stray.key) and the client identities, made fresh for each test.
struct Pki {
    dir: TestDir,
    roots: Arc<RootCertStore>,
    /// Signed by the CA in ca.crt.
    client: Identity,
    /// Signed by another CA.
    stranger: Identity,
}

struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// Certificate and key in PEM, for clients that read files.
    pem: (String, String),
}

fn authority(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params, KeyPair::generate().unwrap())
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (Certificate, KeyPair) {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages.push(usage);
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

fn client_identity(issuer: &Issuer<'_, KeyPair>) -> Identity {
    let (cert, key) = leaf(issuer, "prometheus", ExtendedKeyUsagePurpose::ClientAuth);
    Identity {
        cert: cert.der().clone(),
        key: key.serialize_der(),
        pem: (cert.pem(), key.serialize_pem()),
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = TestDir::new("tls");
        let (ca_params, ca_key) = authority("gunicorn-ebpf-exporter test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let (other_params, other_key) = authority("some other CA");
        let other = Issuer::new(other_params, other_key);

        let (server_cert, server_key) = leaf(&ca, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        let stray = KeyPair::generate().unwrap();
        std::fs::write(dir.join("stray.key"), stray.serialize_pem()).unwrap();

        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let client = client_identity(&ca);
        std::fs::write(dir.join("client.crt"), &client.pem.0).unwrap();
        std::fs::write(dir.join("client.key"), &client.pem.1).unwrap();
        Pki {
            roots: Arc::new(roots),
            client,
            stranger: client_identity(&other),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A client trusting the CA, presenting `identity` if asked.
    fn client(&self, identity: Option<&Identity>) -> Arc<ClientConfig> {
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots.clone());
        Arc::new(match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    vec![id.cert.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

/// The TLS part of a web configuration: relative paths, as people write them
/// beside the file.
fn tls_yaml(client_auth: &str) -> String {
    let mut yaml =
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n".to_string();
    if !client_auth.is_empty() {
        yaml += &format!("  client_auth_type: {client_auth}\n  client_ca_file: ca.crt\n");
    }
    yaml
}

fn users_yaml() -> String {
    format!("basic_auth_users:\n  {USER}: {HASH}\n")
}

#[derive(Debug)]
struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

/// GET `path` over TLS (SNI localhost) with `client`, as `auth` if given: the
/// reply, or the TLS or I/O error (a refused client certificate shows as
/// the server's alert when reading).
fn https_get(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<Reply, String> {
    let tcp = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(SCRAPE_TIMEOUT)).unwrap();
    let server = ServerName::try_from("localhost").unwrap();
    let tls = ClientConnection::new(client.clone(), server).map_err(|e| e.to_string())?;
    let mut stream = StreamOwned::new(tls, tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        let credentials = STANDARD.encode(format!("{user}:{password}"));
        request += &format!("Authorization: Basic {credentials}\r\n");
    }
    request += "\r\n";
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending: {e}"))?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let www_authenticate = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("www-authenticate")
            .then(|| value.trim().to_string())
    });
    Ok(Reply {
        status,
        www_authenticate,
        body: body.to_string(),
    })
}

fn status(reply: Result<Reply, String>) -> Result<u16, String> {
    reply.map(|r| r.status)
}

/// Starts the exporter on `g` and waits until `client` (as `auth`) scrapes it.
fn start(
    builder: ExporterBuilder,
    g: &Gunicorn,
    client: &Arc<ClientConfig>,
    auth: Option<(&str, &str)>,
) -> Exporter {
    let client = client.clone();
    builder
        .pid(g.master_pid())
        .start_probing(
            "/metrics to answer 200 over TLS",
            move |addr| match https_get(addr, &client, "/metrics", auth)? {
                r if r.status == 200 => Ok(()),
                r => Err(format!("status {}", r.status)),
            },
        )
}

/// Rewrites the web configuration in place (as an editor does).
fn write(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// TLS only, then basic auth added and a broken version written, all to the
/// same file with no restart: https serves the metrics and plain http is told
/// to use https; then missing, wrong or unknown credentials get 401 with a
/// Basic challenge and the right ones 200 (50 scrapes at once too: bcrypt is
/// paid once); a broken file is logged and the last good version (auth
/// included) stays in force.
#[test]
fn tls_and_basic_auth_follow_the_file() {
    let pki = Pki::new();
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let config = pki.dir.join("web.yml");
    write(&config, &tls_yaml(""));
    let client = pki.client(None);
    let e = start(
        Exporter::builder()
            .arg("--web.config.file")
            .arg(config.display().to_string()),
        &g,
        &client,
        None,
    );
    let addr = e.addr();
    let get = |auth| https_get(addr, &client, "/metrics", auth);

    let reply = get(None).unwrap();
    let metrics = Metrics::parse(&reply.body).unwrap();
    assert_eq!(
        metrics.value("gunicorn_up", &[]),
        Some(1.0),
        "{}",
        e.story()
    );
    let plain = http::get(addr, "/metrics", SCRAPE_TIMEOUT).expect("plain HTTP gets an answer");
    assert_eq!(plain.0, 400);
    assert!(plain.1.contains("https://"));

    write(&config, &(tls_yaml("") + &users_yaml()));
    let missing = get(None).unwrap();
    assert_eq!(missing.status, 401, "{}", e.story());
    let challenge = missing.www_authenticate.unwrap_or_default();
    assert!(challenge.starts_with("Basic realm="), "{challenge:?}");
    assert_eq!(status(get(Some((USER, "wrong")))), Ok(401));
    assert_eq!(status(get(Some(("mallory", PASSWORD)))), Ok(401));
    assert_eq!(status(get(Some((USER, PASSWORD)))), Ok(200));
    // Every path is behind the auth, not only /metrics.
    assert_eq!(status(https_get(addr, &client, "/", None)), Ok(401));

    let started = Instant::now();
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || {
                status(https_get(addr, &client, "/metrics", Some((USER, PASSWORD))))
            })
        })
        .collect();
    for scraper in scrapers {
        assert_eq!(scraper.join().unwrap(), Ok(200), "{}", e.story());
    }
    eprintln!(
        "50 concurrent authenticated scrapes took {:?}",
        started.elapsed()
    );

    write(&config, "tls_server_config:\n  cert_fil: server.crt\n");
    assert_eq!(status(get(None)), Ok(401), "the last good version stays");
    assert_eq!(status(get(Some((USER, PASSWORD)))), Ok(200));
    let logged = e.stderr();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("cert_fil") && l.contains("last good")),
        "the broken file should be logged, naming the field\n{}",
        e.story()
    );

    write(&config, &tls_yaml(""));
    assert_eq!(status(get(None)), Ok(200), "a fixed file is taken again");
}

/// RequireAndVerifyClientCert: a client without a certificate or with one
/// from another CA is refused in the handshake, the CA's client is served.
/// Switched (no restart) to VerifyClientCertIfGiven: no certificate is
/// served, a wrong one still refused.
#[test]
fn client_certificates_are_verified() {
    let pki = Pki::new();
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let config = pki.dir.join("web.yml");
    write(&config, &tls_yaml("RequireAndVerifyClientCert"));
    let good = pki.client(Some(&pki.client));
    let stranger = pki.client(Some(&pki.stranger));
    let anonymous = pki.client(None);
    let e = start(
        Exporter::builder()
            .arg("--web.config.file")
            .arg(config.display().to_string()),
        &g,
        &good,
        None,
    );
    let get = |client| status(https_get(e.addr(), client, "/metrics", None));

    assert_eq!(get(&good), Ok(200));
    let refused = get(&anonymous).expect_err("no client certificate should be refused");
    assert!(refused.contains("alert"), "{refused}");
    let refused = get(&stranger).expect_err("another CA's certificate should be refused");
    assert!(refused.contains("alert"), "{refused}");

    write(&config, &tls_yaml("VerifyClientCertIfGiven"));
    assert_eq!(get(&anonymous), Ok(200), "{}", e.story());
    assert_eq!(get(&good), Ok(200));
    assert!(
        get(&stranger).is_err(),
        "a certificate given is still verified"
    );
}

/// gunicorn-prometheus-exporter's variables: the same TLS, and the client CA
/// it only parses is enforced here.
#[test]
fn prometheus_ssl_variables_configure_tls() {
    let pki = Pki::new();
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let good = pki.client(Some(&pki.client));
    let e = start(
        Exporter::builder()
            .env("PROMETHEUS_SSL_CERTFILE", pki.path("server.crt"))
            .env("PROMETHEUS_SSL_KEYFILE", pki.path("server.key"))
            .env("PROMETHEUS_SSL_CLIENT_CAFILE", pki.path("ca.crt"))
            .env("PROMETHEUS_SSL_CLIENT_AUTH_REQUIRED", "true"),
        &g,
        &good,
        None,
    );
    assert_eq!(
        status(https_get(e.addr(), &good, "/metrics", None)),
        Ok(200)
    );
    let anonymous = pki.client(None);
    assert!(https_get(e.addr(), &anonymous, "/metrics", None).is_err());
    let stranger = pki.client(Some(&pki.stranger));
    assert!(https_get(e.addr(), &stranger, "/metrics", None).is_err());
}

/// The scraper that matters: a real Prometheus (Go's TLS, ALPN h2 offered)
/// scrapes over mutual TLS with basic auth, as its docs configure it.
#[test]
fn prometheus_scrapes_over_mutual_tls_with_basic_auth() {
    let pki = Pki::new();
    let g = Gunicorn::builder(Version::V27, "sync").workers(1).start();
    let config = pki.dir.join("web.yml");
    write(
        &config,
        &(tls_yaml("RequireAndVerifyClientCert") + &users_yaml()),
    );
    let good = pki.client(Some(&pki.client));
    let e = start(
        Exporter::builder()
            .arg("--web.config.file")
            .arg(config.display().to_string()),
        &g,
        &good,
        Some((USER, PASSWORD)),
    );
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      \
         key_file: {}\n      server_name: localhost\n    basic_auth:\n      username: {USER}\n      \
         password: {PASSWORD}\n",
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let p = Prometheus::start_scraping(&[e.addr()], &[], &job);
    // `up` is Prometheus's own verdict on the scrape; gunicorn_up came through it.
    p.wait_query(
        "Prometheus to scrape the exporter over TLS",
        "up == 1 and on(instance) gunicorn_up == 1",
        Duration::from_secs(30),
        |v| v.len() == 1,
    );
}

/// Each mistake is one `error:` line naming the setting (and the file), and
/// a non-zero exit, before anything else: `--pid` names this test process,
/// which is no Gunicorn, so only a web configuration checked first can be
/// what the exporter complains about.
#[test]
fn bad_web_configurations_are_refused_first() {
    let pki = Pki::new();
    let config = pki.dir.join("web.yml");
    let tls = tls_yaml("");
    let file = || {
        Exporter::builder()
            .pid(std::process::id())
            .arg("--web.config.file")
            .arg(config.display().to_string())
    };
    let cases = [
        (
            "unknown field",
            tls.clone() + "  cert_fil: x\n",
            &["unknown field `cert_fil`", "web.yml"][..],
        ),
        (
            "missing certificate",
            tls.replace("server.crt", "missing.crt"),
            &["tls_server_config.cert_file", "missing.crt"],
        ),
        (
            "not PEM",
            tls.replace("server.crt", "web.yml"),
            &["tls_server_config.cert_file", "no PEM certificate"],
        ),
        (
            "key of another certificate",
            tls.replace("server.key", "stray.key"),
            &["tls_server_config.key_file", "does not match"],
        ),
        (
            "unknown client_auth_type",
            tls.clone() + "  client_auth_type: RequireCert\n",
            &["client_auth_type", "RequireCert"],
        ),
        (
            "verification without a CA",
            tls.clone() + "  client_auth_type: RequireAndVerifyClientCert\n",
            &["client_auth_type", "client_ca_file"],
        ),
        (
            "bad bcrypt hash",
            tls.clone() + "basic_auth_users:\n  alice: plaintext\n",
            &["basic_auth_users.alice", "bcrypt"],
        ),
    ];
    for (what, yaml, keywords) in cases {
        write(&config, &yaml);
        assert_refused(what, &file().run_to_exit(EXIT_TIMEOUT), keywords);
    }

    write(&config, &tls);
    let both = file().env("PROMETHEUS_SSL_CERTFILE", pki.path("server.crt"));
    assert_refused(
        "file and variables",
        &both.run_to_exit(EXIT_TIMEOUT),
        &["PROMETHEUS_SSL_CERTFILE", "one place"],
    );
    let exit = Exporter::builder()
        .pid(std::process::id())
        .arg("--web.config.file")
        .arg(pki.path("absent.yml"))
        .run_to_exit(EXIT_TIMEOUT);
    assert_refused("no such file", &exit, &["cannot read", "absent.yml"]);
    let exit = Exporter::builder()
        .pid(std::process::id())
        .env("PROMETHEUS_SSL_CERTFILE", pki.path("server.crt"))
        .run_to_exit(EXIT_TIMEOUT);
    assert_refused(
        "a certificate without its key",
        &exit,
        &["PROMETHEUS_SSL_KEYFILE"],
    );
}

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One `error:` line on stderr holding every keyword, and a failed exit.
fn assert_refused(what: &str, exit: &ExporterExit, keywords: &[&str]) {
    let lines: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let context = format!(
        "{what}: command: {}\nexit: {}\nstderr:\n{}",
        exit.command_line, exit.status, exit.stderr
    );
    assert!(!exit.status.success(), "should have failed\n{context}");
    assert!(
        lines.len() == 1 && lines[0].starts_with("error:"),
        "stderr should be one `error:` line\n{context}"
    );
    for keyword in keywords {
        assert!(
            lines[0].contains(keyword),
            "the error should say {keyword:?}\n{context}"
        );
    }
}
