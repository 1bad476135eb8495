//! TLS and mutual TLS: a client that trusts the server's CA is served; a
//! plaintext client is not; with a client CA set, neither is a client
//! without a certificate from it.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use authd::{
    grpc::pb::{ValidateTokenRequest, auth_service_client::AuthServiceClient},
    tls::TlsSettings,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{Backend, World};

/// A certificate and its key, in PEM.
struct Issued {
    cert: String,
    key: String,
}

/// A CA of its own, with what it signed.
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    server: Issued,
    /// A second server certificate, for a renewal.
    renewal: Issued,
    client: Issued,
}

fn issue(
    ca: &CertifiedIssuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    serial: u64,
) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![usage];
    params.serial_number = Some(SerialNumber::from(serial));
    let cert = params.signed_by(&key, ca).unwrap();
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn new_pki(name: &str) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Pki {
        dir: tempfile::tempdir().unwrap(),
        ca: ca.pem(),
        server: issue(&ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth, 1),
        renewal: issue(&ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth, 2),
        client: issue(&ca, &["a-service"], ExtendedKeyUsagePurpose::ClientAuth, 3),
    }
}

impl Pki {
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// Server settings: TLS, and mutual TLS when `require_clients`.
    fn settings(&self, require_clients: bool) -> TlsSettings {
        TlsSettings {
            cert: self.write("server.pem", &self.server.cert),
            key: self.write("server.key", &self.server.key),
            client_ca: require_clients.then(|| self.write("ca.pem", &self.ca)),
            watch_interval: None,
        }
    }
}

/// A client over TLS that trusts `trusted`'s CA, presenting `identity`.
async fn client(
    world: &World,
    trusted: &Pki,
    identity: Option<&Issued>,
) -> Result<AuthServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trusted.ca))
        .domain_name("localhost");
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(&issued.cert, &issued.key));
    }
    let channel = Channel::from_shared(format!("https://{}", world.app.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AuthServiceClient::new(channel))
}

/// Logs alice in over `client` and validates the token: the full cycle.
async fn serves(client: &mut AuthServiceClient<Channel>) -> Result<(), tonic::Status> {
    let login = client
        .login(authd::grpc::pb::LoginRequest {
            username: "alice".to_owned(),
            password: "correct horse battery".to_owned(),
        })
        .await?
        .into_inner();
    let answer = client
        .validate_token(ValidateTokenRequest {
            access_token: login.access_token,
        })
        .await?
        .into_inner();
    assert!(answer.valid);
    Ok(())
}

/// An error and its sources, for telling a TLS refusal from other failures.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(" <- {cause:?}"));
        source = cause.source();
    }
    text
}

/// Whether a plaintext client gets any answer at all.
async fn plaintext_is_answered(world: &World) -> bool {
    let Ok(channel) = Channel::from_shared(format!("http://{}", world.app.addr))
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    AuthServiceClient::new(channel)
        .validate_token(ValidateTokenRequest {
            access_token: "x".to_owned(),
        })
        .await
        .is_ok()
}

#[tokio::test]
async fn tls_serves_clients_that_trust_its_ca_and_no_plaintext() {
    let pki = new_pki("authd");
    let world = World::with(Backend::Sqlite, |s| s.tls = Some(pki.settings(false))).await;
    world.add_user("alice", "correct horse battery", &[]).await;

    let mut trusting = client(&world, &pki, None).await.unwrap();
    serves(&mut trusting).await.unwrap();

    assert!(!plaintext_is_answered(&world).await);
    let stranger = new_pki("another");
    let distrusting = client(&world, &stranger, None)
        .await
        .expect_err("a client that does not trust the CA connects");
    let chain = error_chain(&distrusting);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let pki = new_pki("authd");
    let world = World::with(Backend::Sqlite, |s| s.tls = Some(pki.settings(true))).await;
    world.add_user("alice", "correct horse battery", &[]).await;

    let mut with_cert = client(&world, &pki, Some(&pki.client)).await.unwrap();
    serves(&mut with_cert).await.unwrap();

    // TLS 1.3 ends the handshake before the server checks the client's
    // certificate, so the refusal may come at the first call: either way
    // it must be the server's TLS alert, not any failure.
    let refusal = |result: Result<AuthServiceClient<Channel>, tonic::transport::Error>| async move {
        match result {
            Err(err) => error_chain(&err),
            Ok(mut client) => match serves(&mut client).await {
                Err(status) => error_chain(&status),
                Ok(()) => "served".to_owned(),
            },
        }
    };
    let without = refusal(client(&world, &pki, None).await).await;
    assert!(
        without.contains("CertificateRequired"),
        "no certificate: {without}"
    );
    let stranger = new_pki("another");
    let foreign = refusal(client(&world, &pki, Some(&stranger.client)).await).await;
    assert!(
        foreign.contains("UnknownCA"),
        "a certificate of another CA: {foreign}"
    );
    assert!(!plaintext_is_answered(&world).await);
}

#[tokio::test]
async fn under_mutual_tls_a_verified_certificate_may_watch_revocations() {
    use authd::grpc::pb::{WatchRevocationsRequest, revocation_event::Event};
    let pki = new_pki("authd");
    let world = World::with(Backend::Sqlite, |s| s.tls = Some(pki.settings(true))).await;
    let mut with_cert = client(&world, &pki, Some(&pki.client)).await.unwrap();
    // No token at all: the certificate is the credential.
    let mut stream = with_cert
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Snapshot(ref s)) if s.complete),
        "{first:?}"
    );
}

#[tokio::test]
async fn the_rust_client_validates_locally_over_mutual_tls_with_its_certificate() {
    use authd_client::{
        Client, ClientConfig, Credentials, LocalValidator, TlsConfig, ValidatorConfig, Validity,
    };
    let pki = new_pki("authd");
    let mut world = World::with(Backend::Sqlite, |s| s.tls = Some(pki.settings(true))).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let config = ClientConfig::new(format!("https://{}", world.app.addr)).with_tls(TlsConfig {
        ca_pem: Some(pki.ca.clone().into_bytes()),
        identity: Some((
            pki.client.cert.clone().into_bytes(),
            pki.client.key.clone().into(),
        )),
        domain: Some("localhost".to_owned()),
    });
    let rust_client = Client::connect(config).await.unwrap();
    let tokens = rust_client
        .login("alice", &"correct horse battery".into())
        .await
        .unwrap();
    // No service account: the certificate is enough to watch.
    let validator = LocalValidator::start(
        rust_client,
        ValidatorConfig::new(Credentials::ClientCertificate),
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), validator.ready())
        .await
        .expect("ready within 10 s");
    let token = secrecy::ExposeSecret::expose_secret(&tokens.access_token).to_owned();
    assert!(matches!(
        validator.validate(&token).await,
        Ok(Validity::Valid(_))
    ));
    // The test's own calls go over mutual TLS too.
    world.app.client = client(&world, &pki, Some(&pki.client)).await.unwrap();
    world.app.logout(&token).await.unwrap();
    let (held, seen) = (&validator, token.as_str());
    crate::helpers::within_10s("revoked", || async move {
        !matches!(held.validate(seen).await, Ok(Validity::Valid(_)))
    })
    .await;
    assert_eq!(
        validator.validate(&token).await,
        Ok(Validity::Invalid(authd_client::InvalidToken::Revoked))
    );
}

/// Replaces `path` whole with `text`, as a renewal does (never half
/// written).
fn replace(path: &std::path::Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A TLS client that trusts `trusted`'s CA and presents no certificate.
fn trusting(trusted: &Pki) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, pem::PemObject as _},
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted.ca.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// The certificate a new TLS connection is served, as DER.
async fn served_certificate(world: &World, trusted: &Pki) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(world.app.addr)
        .await
        .unwrap();
    let tls = trusting(trusted)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_a_broken_one_never_does() {
    let pki = new_pki("authd");
    let mut tls = pki.settings(false);
    tls.watch_interval = Some(std::time::Duration::from_millis(20));
    let world = World::with(Backend::Sqlite, |s| s.tls = Some(tls.clone())).await;
    world.add_user("alice", "correct horse battery", &[]).await;
    let mut open = client(&world, &pki, None).await.unwrap();
    serves(&mut open).await.unwrap();
    assert_eq!(
        served_certificate(&world, &pki).await,
        der(&pki.server.cert)
    );

    // Serial 2, written over the files the server started from.
    replace(&tls.cert, &pki.renewal.cert);
    replace(&tls.key, &pki.renewal.key);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served_certificate(&world, &pki).await != der(&pki.renewal.cert) {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewal is not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    serves(&mut open).await.unwrap();
    serves(&mut client(&world, &pki, None).await.unwrap())
        .await
        .unwrap();

    // A key that is not the certificate's, then a certificate file that
    // holds none: each reload fails, and the renewal is still served.
    let reloader = world.app.tls.as_ref().unwrap();
    replace(&tls.key, &pki.server.key);
    let mismatched = format!("{:#}", reloader.reload().unwrap_err());
    assert!(mismatched.contains("is not the key of"), "{mismatched}");
    replace(&tls.key, &pki.renewal.key);
    replace(&tls.cert, "not a certificate\n");
    let garbage = format!("{:#}", reloader.reload().unwrap_err());
    assert!(garbage.contains("holds no certificate"), "{garbage}");
    assert!(!garbage.contains("BEGIN"), "{garbage}");
    assert_eq!(
        served_certificate(&world, &pki).await,
        der(&pki.renewal.cert)
    );
    serves(&mut client(&world, &pki, None).await.unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tls_key_others_may_read_is_refused_at_start() {
    let pki = new_pki("authd");
    let tls = pki.settings(false);
    std::fs::set_permissions(&tls.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::settings(
        format!("sqlite://{}", dir.path().join("authd.db").display()),
        dir.path(),
    );
    settings.tls = Some(tls);

    let err = authd::startup::Application::build(settings)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
}

/// One HTTPS GET to the server's HTTP listener, trusting `trusted`'s CA,
/// with no client certificate.
async fn https_get(world: &World, trusted: &Pki, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use http_body_util::BodyExt as _;
    use tokio_rustls::rustls::pki_types::ServerName;

    let addr = world.app.http_addr.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = trusting(trusted)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, body.to_vec()))
}

#[tokio::test]
async fn the_http_listener_serves_https_with_the_same_certificate_and_no_client_certificate() {
    let pki = new_pki("authd");
    let world = World::with(Backend::Sqlite, |s| s.tls = Some(pki.settings(true))).await;

    let (status, body) = https_get(&world, &pki, "/.well-known/jwks.json")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let keys: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    let (status, body) = https_get(&world, &pki, "/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let metadata: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let addr = world.app.http_addr.unwrap();
    assert_eq!(
        metadata["jwks_uri"],
        format!("https://{addr}/.well-known/jwks.json").as_str()
    );

    let stranger = new_pki("another");
    let refused = https_get(&world, &stranger, "/healthz").await.unwrap_err();
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "{refused:?}"
    );
    // Plaintext HTTP gets no answer from an HTTPS listener.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::helpers::try_http_request(addr, "GET", "/healthz"),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Some(_))),
        "plaintext was answered: {plain:?}"
    );
}
