//! The rustls server configuration a TLS spec asks for: certificate and key
//! (checked to match), protocol versions, and a client-certificate verifier
//! for each of the toolkit's client_auth_type policies. Crypto is ring's.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject as _},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    version::{TLS12, TLS13},
};

use super::{
    Files, Problem,
    spec::{ClientAuth, Pem, PemFrom, TlsSpec, TlsVersion},
};

pub fn server_config(spec: &TlsSpec, files: &mut Files) -> Result<Arc<ServerConfig>, Problem> {
    let provider = Arc::new(ring::default_provider());
    let certs = certificates(&spec.cert, files)?;
    let key_pem = read(&spec.key, files)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| spec.key.problem(format!("no PEM private key in it ({e})")))?;
    let verifier = client_verifier(spec, provider.clone(), files)?;
    let versions: Vec<_> = [(TlsVersion::TLS12, &TLS12), (TlsVersion::TLS13, &TLS13)]
        .into_iter()
        .filter(|(v, _)| (spec.min_version..=spec.max_version).contains(v))
        .map(|(_, version)| version)
        .collect();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| Problem::setting("tls_server_config.min_version", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            TlsError::InconsistentKeys(_) => spec.key.problem(format!(
                "the private key does not match the certificate of {}",
                spec.cert.describe()
            )),
            e => spec.key.problem(format!("unusable private key: {e}")),
        })?;
    // Scrapes are HTTP/1.1 (hyper serves nothing else here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    spec: &TlsSpec,
    provider: Arc<CryptoProvider>,
    files: &mut Files,
) -> Result<Arc<dyn ClientCertVerifier>, Problem> {
    let policy = spec.client_auth;
    let ca = match (&spec.client_ca, policy) {
        // What the toolkit refuses too: a CA that would check nothing.
        (Some(ca), ClientAuth::NoClientCert) => {
            return Err(Problem::setting(
                ca.setting,
                format!(
                    "a client CA is given, but {} is NoClientCert (say which client certificates to take)",
                    spec.client_auth_setting
                ),
            ));
        }
        (None, policy) if policy.verifies() => {
            return Err(Problem::setting(
                spec.client_auth_setting,
                format!(
                    "{policy} needs a client CA to verify certificates with: set {}",
                    spec.client_ca_setting
                ),
            ));
        }
        (ca, _) => ca,
    };
    let algorithms = provider.signature_verification_algorithms;
    Ok(match policy {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert => Arc::new(AnyCertificate {
            mandatory: false,
            algorithms,
        }),
        ClientAuth::RequireAnyClientCert => Arc::new(AnyCertificate {
            mandatory: true,
            algorithms,
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = ca.as_ref().expect("checked above");
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, files)? {
                roots
                    .add(cert)
                    .map_err(|e| ca.problem(format!("not a usable CA certificate: {e}")))?;
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let builder = match policy {
                ClientAuth::VerifyClientCertIfGiven => builder.allow_unauthenticated(),
                _ => builder,
            };
            builder.build().map_err(|e| {
                ca.problem(format!("cannot verify client certificates with it: {e}"))
            })?
        }
    })
}

fn read(pem: &Pem, files: &mut Files) -> Result<Vec<u8>, Problem> {
    match &pem.from {
        PemFrom::File(path) => files.read(path).map_err(|e| {
            Problem::setting(pem.setting, format!("cannot read {}: {e}", path.display()))
        }),
        PemFrom::Inline(text) => Ok(text.clone().into_bytes()),
    }
}

fn certificates(pem: &Pem, files: &mut Files) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let text = read(pem, files)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem.problem(format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(pem.problem("no PEM certificate in it"));
    }
    Ok(certs)
}

impl Pem {
    fn describe(&self) -> String {
        match &self.from {
            PemFrom::File(path) => path.display().to_string(),
            PemFrom::Inline(_) => self.setting.to_string(),
        }
    }

    /// A problem with this PEM's content, naming the setting and the file.
    fn problem(&self, problem: impl Into<String>) -> Problem {
        match &self.from {
            PemFrom::File(path) => Problem::setting(
                self.setting,
                format!("{}: {}", path.display(), problem.into()),
            ),
            PemFrom::Inline(_) => Problem::setting(self.setting, problem),
        }
    }
}

/// RequestClientCert and RequireAnyClientCert: any certificate is taken
/// unverified (the toolkit warns these are insecure; Go's semantics), but the
/// handshake still proves the client holds its key.
#[derive(Debug)]
struct AnyCertificate {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use rustls::{ClientConfig, ClientConnection, ServerConnection, pki_types::ServerName};

    use super::*;

    /// A CA (PEM), a server certificate and key it signed (PEM), and a client
    /// identity it signed or, with `stranger`, that another CA signed.
    struct Pki {
        ca: String,
        server: (String, String),
        client: (CertificateDer<'static>, Vec<u8>),
        stranger: (CertificateDer<'static>, Vec<u8>),
        roots: Arc<RootCertStore>,
    }

    fn issuer(name: &str) -> (CertificateDer<'static>, String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), cert.pem(), Issuer::new(params, key))
    }

    fn leaf(
        issuer: &Issuer<'_, KeyPair>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.extended_key_usages.push(usage);
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, issuer).unwrap(), key)
    }

    impl Pki {
        fn new() -> Pki {
            let (ca_der, ca, ca_issuer) = issuer("test CA");
            let (_, _, other) = issuer("another CA");
            let (cert, key) = leaf(&ca_issuer, ExtendedKeyUsagePurpose::ServerAuth);
            let client = |issuer| {
                let (cert, key) = leaf(issuer, ExtendedKeyUsagePurpose::ClientAuth);
                (cert.der().clone(), key.serialize_der())
            };
            let mut roots = RootCertStore::empty();
            roots.add(ca_der).unwrap();
            Pki {
                ca,
                server: (cert.pem(), key.serialize_pem()),
                client: client(&ca_issuer),
                stranger: client(&other),
                roots: Arc::new(roots),
            }
        }

        fn server(
            &self,
            client_auth: ClientAuth,
            with_ca: bool,
        ) -> Result<Arc<ServerConfig>, Problem> {
            let inline = |setting, text: &str| Pem {
                setting,
                from: PemFrom::Inline(text.to_string()),
            };
            let spec = TlsSpec {
                cert: inline("cert", &self.server.0),
                key: inline("key", &self.server.1),
                client_ca: with_ca.then(|| inline("client_ca", &self.ca)),
                client_auth,
                client_auth_setting: "client_auth_type",
                client_ca_setting: "client_ca_file",
                min_version: TlsVersion::TLS12,
                max_version: TlsVersion::TLS13,
            };
            server_config(&spec, &mut Files::default())
        }

        /// A whole handshake in memory, as `identity` if given.
        fn handshake(
            &self,
            server: Arc<ServerConfig>,
            identity: Option<&(CertificateDer<'static>, Vec<u8>)>,
        ) -> Result<(), TlsError> {
            let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(self.roots.clone());
            let config = match identity {
                Some((cert, key)) => builder.with_client_auth_cert(
                    vec![cert.clone()],
                    PrivateKeyDer::try_from(key.clone()).unwrap(),
                )?,
                None => builder.with_no_client_auth(),
            };
            let mut client = ClientConnection::new(
                Arc::new(config),
                ServerName::try_from("localhost").unwrap(),
            )?;
            let mut server = ServerConnection::new(server)?;
            for _ in 0..10 {
                let mut wire = Vec::new();
                client.write_tls(&mut wire).unwrap();
                server.read_tls(&mut wire.as_slice()).unwrap();
                server.process_new_packets()?;
                let mut wire = Vec::new();
                server.write_tls(&mut wire).unwrap();
                client.read_tls(&mut wire.as_slice()).unwrap();
                client.process_new_packets()?;
                if !client.is_handshaking() && !server.is_handshaking() {
                    return Ok(());
                }
            }
            panic!("the handshake did not finish");
        }
    }

    #[test]
    fn each_client_auth_type_takes_what_it_says() {
        use ClientAuth::*;
        let pki = Pki::new();
        let (good, stranger) = (Some(&pki.client), Some(&pki.stranger));
        // (policy, client CA, no certificate, the CA's, another CA's)
        for (policy, with_ca, none_ok, good_ok, stranger_ok) in [
            (NoClientCert, false, true, true, true),
            (RequestClientCert, false, true, true, true),
            (RequireAnyClientCert, false, false, true, true),
            (VerifyClientCertIfGiven, true, true, true, false),
            (RequireAndVerifyClientCert, true, false, true, false),
        ] {
            let server = pki.server(policy, with_ca).unwrap();
            let outcome = |identity| pki.handshake(server.clone(), identity).is_ok();
            assert_eq!(
                (outcome(None), outcome(good), outcome(stranger)),
                (none_ok, good_ok, stranger_ok),
                "{policy}"
            );
        }
    }

    #[test]
    fn a_client_ca_needs_a_policy_that_uses_it() {
        let pki = Pki::new();
        let e = pki
            .server(ClientAuth::NoClientCert, true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("client_ca: a client CA is given"), "{e}");
        let e = pki
            .server(ClientAuth::VerifyClientCertIfGiven, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("client_auth_type: VerifyClientCertIfGiven needs a client CA"),
            "{e}"
        );
    }
}
