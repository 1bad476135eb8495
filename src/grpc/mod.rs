//! The transport edge: converts between protobuf and domain types, maps
//! errors to gRPC statuses and logs one line per call. No business rules.

mod redact;
mod service;
mod status;

pub use service::AuthApi;

/// Code generated from `proto/auth/v1/auth.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("auth.v1");
}

/// The encoded descriptors of our proto and its imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/auth_descriptor.bin"));

/// The fully qualified name of the service, as health checks name it.
pub const SERVICE_NAME: &str = "auth.v1.AuthService";

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn descriptor_set_describes_the_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let auth = set.file.iter().find(|f| f.package() == "auth.v1").unwrap();
        assert_eq!(
            format!("{}.{}", auth.package(), auth.service[0].name()),
            SERVICE_NAME
        );
    }
}
