//! Compiles `proto/` into Rust with a pure-Rust protobuf compiler (no `protoc`
//! needed on the build machine) and writes the descriptor sets that server
//! reflection serves: ours, and Envoy's ext_authz service.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let protos = ["proto/auth/v1/auth.proto"];
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    // A new envoy-types moves the protos the ext_authz descriptors come from.
    println!("cargo:rerun-if-changed=Cargo.lock");

    let descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("auth_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    std::fs::write(
        out_dir.join("ext_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&ext_authz_descriptors()?),
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

/// The descriptors of `envoy.service.auth.v3`, compiled from the protos the
/// envoy-types package ships (its Rust types carry none), so that grpcurl
/// can list, describe and call `Authorization/Check`.
fn ext_authz_descriptors() -> Result<prost_types::FileDescriptorSet, BoxError> {
    let root = package_dir("envoy-types")?.join("proto");
    let includes =
        ["data-plane-api", "googleapis", "protoc-gen-validate", "xds"].map(|dir| root.join(dir));
    Ok(protox::compile(
        ["envoy/service/auth/v3/external_auth.proto"],
        includes,
    )?)
}

/// Where cargo keeps the source of the dependency `name`, as `cargo metadata`
/// resolves it for this workspace (registry, vendored or git alike).
fn package_dir(name: &str) -> Result<PathBuf, BoxError> {
    let cargo = env::var("CARGO")?;
    let manifest = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_path = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == name)
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or_else(|| format!("cargo metadata does not list the package {name}"))?;
    Ok(Path::new(manifest_path)
        .parent()
        .ok_or("a manifest path without a directory")?
        .to_owned())
}
