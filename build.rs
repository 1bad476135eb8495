//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (no `protoc`
//! needed on the build machine) and writes the descriptor set that server
//! reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/auth/v1/auth.proto"];
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("auth_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // These carry passwords or tokens: their `Debug` is written by hand,
        // redacted, in src/grpc/redact.rs.
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
