//! The transport edge: converts between protobuf and domain types, maps
//! errors to gRPC statuses and logs one line per call. No business rules.

mod admin;
mod client_address;
mod ext_authz;
mod metrics;
mod redact;
mod service;
mod status;
mod trace;
mod watch;

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::telemetry::metrics::GrpcMethod;

pub use admin::{AdminApi, PageTokenKey};
pub use client_address::TrustedProxies;
pub use ext_authz::{EXT_AUTHZ_SERVICE_NAME, ExtAuthzApi, REQUIRED_ROLE_KEY};
pub use metrics::MetricsLayer;
pub use service::{AuthApi, reason_name};
pub use status::{ERROR_DOMAIN, Reason};
pub use watch::WatchSettings;

/// Code generated from `proto/`, in modules named as the packages are, so
/// that one package's code finds another's.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `auth.v1`, from `proto/auth/v1/auth.proto`.
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
    /// `auth.admin.*`.
    pub mod admin {
        /// `auth.admin.v1`, from `proto/auth/admin/v1/admin.proto`.
        pub mod v1 {
            tonic::include_proto!("auth.admin.v1");
        }
    }
}

pub use proto::{admin::v1 as admin_pb, v1 as pb};

/// The encoded descriptors of our protos and their imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/auth_descriptor.bin"));

/// The encoded descriptors of Envoy's `envoy.service.auth.v3` and its
/// imports, for reflection.
pub const EXT_AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ext_authz_descriptor.bin"));

/// The fully qualified name of the service, as health checks name it.
pub const SERVICE_NAME: &str = "auth.v1.AuthService";

/// The fully qualified name of the admin service.
pub const ADMIN_SERVICE_NAME: &str = "auth.admin.v1.AdminService";

/// Every method of the services authd serves (its own, ext_authz, health
/// and reflection), as the gRPC server metrics label them.
///
/// # Errors
/// When a descriptor set does not decode, a bug.
pub fn served_methods() -> Result<Vec<GrpcMethod>, prost::DecodeError> {
    const SERVED: [&str; 6] = [
        SERVICE_NAME,
        ADMIN_SERVICE_NAME,
        EXT_AUTHZ_SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let mut methods = GrpcMethod::all_in(&[
        FILE_DESCRIPTOR_SET,
        EXT_AUTHZ_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])?;
    methods.retain(|method| SERVED.contains(&method.service.as_str()));
    Ok(methods)
}

/// The calls in flight that the services answering clients may hold at
/// once, shared by all of them; beyond it calls are refused at once
/// rather than queued.
#[derive(Debug, Clone)]
pub struct CallLimit(Arc<Semaphore>);

impl CallLimit {
    /// At most `max` calls at a time.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }

    /// A place for one call, held until dropped; `None` when full.
    fn try_enter(&self) -> Option<SemaphorePermit<'_>> {
        self.0.try_acquire().ok()
    }

    /// A place for one gRPC call, or the RESOURCE_EXHAUSTED it is refused
    /// with when there is none.
    fn enter(&self) -> Result<SemaphorePermit<'_>, tonic::Status> {
        self.try_enter().ok_or_else(|| {
            status::overloaded("the server is at its limit of calls in flight; retry shortly")
        })
    }
}

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
        let admin = set
            .file
            .iter()
            .find(|f| f.package() == "auth.admin.v1")
            .unwrap();
        assert_eq!(
            format!("{}.{}", admin.package(), admin.service[0].name()),
            ADMIN_SERVICE_NAME
        );
    }

    #[test]
    fn every_service_served_has_its_methods_counted() {
        let methods = served_methods().unwrap();
        let count = |service: &str| methods.iter().filter(|m| m.service == service).count();
        assert!(count(SERVICE_NAME) >= 7);
        assert!(count(ADMIN_SERVICE_NAME) >= 6);
        assert_eq!(count(EXT_AUTHZ_SERVICE_NAME), 1);
        assert_eq!(count("grpc.health.v1.Health"), 2);
        assert_eq!(count("grpc.reflection.v1.ServerReflection"), 1);
        assert_eq!(count("grpc.reflection.v1alpha.ServerReflection"), 1);
        let kind = |name: &str| methods.iter().find(|m| m.method == name).unwrap().kind;
        assert_eq!(kind("ValidateToken"), "unary");
        assert_eq!(kind("Watch"), "server_stream");
        assert_eq!(kind("ServerReflectionInfo"), "bidi_stream");
    }

    #[test]
    fn descriptor_set_describes_ext_authz() {
        let set = prost_types::FileDescriptorSet::decode(EXT_AUTHZ_FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "envoy/service/auth/v3/external_auth.proto")
            .unwrap();
        assert_eq!(
            format!("{}.{}", file.package(), file.service[0].name()),
            EXT_AUTHZ_SERVICE_NAME
        );
    }
}
