//! A tonic server whose every call needs a valid authd token carrying the
//! role `reports`; here the service is the standard health service, and
//! tokens are checked with a ValidateToken call each (`AuthLayer::remote`)
//! for a deployment that would rather not hold revocations in-process.
//!
//! ```text
//! cargo run -p authd-client --example protected_grpc
//! grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
//!   127.0.0.1:50061 grpc.health.v1.Health/Check
//! ```

use authd_client::{AuthLayer, Client, ClientConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Info and above unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let authd = std::env::var("AUTHD_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let client = Client::connect_lazy(ClientConfig::new(authd))?;
    let (_, health) = tonic_health::server::health_reporter();
    let address = "127.0.0.1:50061".parse()?;
    tracing::info!(%address, "serving");
    tonic::transport::Server::builder()
        .layer(AuthLayer::remote(client).require_role("reports"))
        .add_service(health)
        .serve(address)
        .await?;
    Ok(())
}
