//! An HTTP service that answers only requests with a valid authd token,
//! checked in-process by a `LocalValidator` that follows authd's
//! revocations: a Logout is refused here within milliseconds.
//!
//! ```text
//! authd user add greeter-watch --role authd:watch
//! AUTHD_WATCHER=greeter-watch AUTHD_WATCHER_PASSWORD=… \
//!   cargo run -p authd-client --example protected_http
//! curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:8090/hello
//! ```

use std::time::Duration;

use authd_client::{
    AuthLayer, Caller, Client, ClientConfig, Credentials, LocalValidator, ValidatorConfig,
};
use axum::{Extension, Router, routing::get};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Info and above unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    // Lazy: the service starts while authd is down, and answers 503 until
    // it can know.
    let client = Client::connect_lazy(ClientConfig::new(env(
        "AUTHD_URL",
        "http://127.0.0.1:50051",
    )))?;
    let validator = LocalValidator::start(
        client,
        ValidatorConfig::new(Credentials::ServiceAccount {
            username: env("AUTHD_WATCHER", "greeter-watch"),
            password: std::env::var("AUTHD_WATCHER_PASSWORD")?.into(),
        }),
    );
    if tokio::time::timeout(Duration::from_secs(5), validator.ready())
        .await
        .is_err()
    {
        tracing::warn!("authd is not answering yet; requests get 503 until it does");
    }

    let app = Router::new()
        .route(
            "/hello",
            get(|Extension(caller): Extension<Caller>| async move {
                format!("hello, {} (roles: {:?})\n", caller.username, caller.roles)
            }),
        )
        .layer(AuthLayer::local(validator));
    let listener = tokio::net::TcpListener::bind(env("LISTEN", "127.0.0.1:8090")).await?;
    tracing::info!(address = %listener.local_addr()?, "serving");
    axum::serve(listener, app).await?;
    Ok(())
}
