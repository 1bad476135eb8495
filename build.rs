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
    let protos = [
        "proto/auth/v1/auth.proto",
        "proto/auth/admin/v1/admin.proto",
    ];
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
            ".auth.admin.v1.CreateUserRequest",
            ".auth.admin.v1.SetPasswordRequest",
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
    // Only the target's packages: a build downloads no other platform's.
    // Offline first, as the build has fetched what it compiles; a build
    // of one binary has not fetched the dev-dependencies metadata also
    // resolves, so then once more, free to fetch them.
    let metadata = cargo_metadata(true).or_else(|offline| {
        cargo_metadata(false).map_err(|online| format!("{offline}; then {online}"))
    })?;
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

fn cargo_metadata(offline: bool) -> Result<serde_json::Value, BoxError> {
    let manifest = Path::new(&env::var("CARGO_MANIFEST_DIR")?).join("Cargo.toml");
    let mut command = Command::new(env::var("CARGO")?);
    command
        .args(["metadata", "--format-version", "1", "--locked"])
        .arg("--filter-platform")
        .arg(env::var("TARGET")?)
        .arg("--manifest-path")
        .arg(&manifest);
    if offline {
        command.arg("--offline");
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata{} failed: {}",
            if offline { " --offline" } else { "" },
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
