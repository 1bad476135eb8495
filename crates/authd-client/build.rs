//! Compiles authd's public API, `proto/auth/v1/auth.proto`, into a client
//! with a pure-Rust protobuf compiler (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile([root.join("auth/v1/auth.proto")], [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // These carry passwords or tokens: their `Debug` is written by
        // hand, redacted, in src/pb.rs.
        .skip_debug([
            ".auth.v1.LoginRequest",
            ".auth.v1.LoginResponse",
            ".auth.v1.LogoutRequest",
            ".auth.v1.RefreshRequest",
            ".auth.v1.ValidateTokenRequest",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
