//! The parts of a `CheckRequest` authd reads, decoded from its wire form.
//!
//! Envoy sends every attribute of the request (peers, method, path, every
//! header, maybe the body) and authd needs two of them. Decoding the whole
//! message into envoy-types' structs allocates a string and hashes a map
//! entry for every header, which cost more than the decision itself; these
//! views keep only what is read, as slices of the received buffer, and
//! protobuf's rules skip every other field unread.

use bytes::Bytes;

use crate::{
    domain::{InvalidInput, Role},
    proxy::{self, Credentials},
};

use super::REQUIRED_ROLE_KEY;

/// `envoy.service.auth.v3.CheckRequest`, as far as authd reads it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckView {
    #[prost(message, optional, tag = "1")]
    attributes: Option<AttributesView>,
}

/// `AttributeContext`: the request, and the route's `context_extensions`.
#[derive(Clone, PartialEq, prost::Message)]
struct AttributesView {
    #[prost(message, optional, tag = "4")]
    request: Option<RequestView>,
    /// A `map<string, string>`: on the wire, one entry message per pair.
    #[prost(message, repeated, tag = "10")]
    context_extensions: Vec<Entry>,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestView {
    #[prost(message, optional, tag = "2")]
    http: Option<HttpView>,
}

/// `AttributeContext.HttpRequest`: its headers, as a map or as Envoy's raw
/// header map.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpView {
    #[prost(message, repeated, tag = "3")]
    headers: Vec<Entry>,
    #[prost(message, optional, tag = "13")]
    header_map: Option<HeaderMapView>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
struct HeaderMapView {
    #[prost(message, repeated, tag = "1")]
    headers: Vec<RawHeader>,
}

/// `envoy.config.core.v3.HeaderValue`. The protobuf strings are read as
/// bytes (the same wire form) and checked for UTF-8 only where used.
#[derive(Clone, PartialEq, prost::Message)]
struct RawHeader {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    raw_value: Bytes,
}

/// One entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

impl CheckView {
    fn http(&self) -> Option<&HttpView> {
        self.attributes.as_ref()?.request.as_ref()?.http.as_ref()
    }

    /// The request's `Authorization` values: from `header_map` when Envoy
    /// sends raw headers (each repeated header its own entry), else from
    /// `headers`, where Envoy joins repeated ones with commas.
    pub fn credentials(&self) -> Credentials {
        let Some(http) = self.http() else {
            return Credentials::None;
        };
        if let Some(map) = http
            .header_map
            .as_ref()
            .filter(|map| !map.headers.is_empty())
        {
            return Credentials::from_headers(
                map.headers
                    .iter()
                    .filter(|header| header.key.eq_ignore_ascii_case(b"authorization"))
                    .map(|header| {
                        if header.raw_value.is_empty() {
                            &header.value[..]
                        } else {
                            &header.raw_value[..]
                        }
                    }),
            );
        }
        // A map's keys are unique: where an entry repeats one, the last
        // counts, as protobuf decodes maps.
        Credentials::from_headers(
            last_value(&http.headers, b"authorization")
                .map(|value| &value[..])
                .into_iter(),
        )
    }

    /// The roles the route requires: Envoy's per-route
    /// `context_extensions`. A key of ours that is misspelt must not pass
    /// as no requirement.
    ///
    /// # Errors
    /// [`InvalidInput`] for an `authd_` key authd does not know, or a role
    /// that cannot be one.
    pub fn required_roles(&self) -> Result<Vec<Role>, InvalidInput> {
        let Some(attributes) = &self.attributes else {
            return Ok(Vec::new());
        };
        let extensions = &attributes.context_extensions;
        if let Some(unknown) = extensions.iter().find(|entry| {
            entry.key.starts_with(b"authd_") && entry.key != REQUIRED_ROLE_KEY.as_bytes()
        }) {
            return Err(InvalidInput::new(
                "context_extensions",
                format!(
                    "{} is not a key authd knows; it takes {REQUIRED_ROLE_KEY}",
                    String::from_utf8_lossy(&unknown.key)
                ),
            ));
        }
        let Some(role) = last_value(extensions, REQUIRED_ROLE_KEY.as_bytes()) else {
            return Ok(Vec::new());
        };
        let role = std::str::from_utf8(role).map_err(|_| {
            InvalidInput::new(
                "context_extensions",
                format!("{REQUIRED_ROLE_KEY} is not UTF-8"),
            )
        })?;
        proxy::required_roles(std::iter::once(role))
    }
}

fn last_value<'a>(entries: &'a [Entry], key: &[u8]) -> Option<&'a Bytes> {
    entries
        .iter()
        .rev()
        .find(|entry| entry.key == key)
        .map(|entry| &entry.value)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::core::v3::{HeaderMap, HeaderValue},
        service::auth::v3::{AttributeContext, CheckRequest, attribute_context},
    };
    use prost::Message as _;

    use super::*;

    /// What envoy-types encodes, as these views decode it.
    fn view(http: attribute_context::HttpRequest, extensions: &[(&str, &str)]) -> CheckView {
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: extensions
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
                ..Default::default()
            }),
        };
        CheckView::decode(Bytes::from(request.encode_to_vec())).expect("a CheckRequest decodes")
    }

    fn with_headers(headers: &[(&str, &str)]) -> attribute_context::HttpRequest {
        attribute_context::HttpRequest {
            method: "GET".into(),
            path: "/v1/items".into(),
            body: "x".repeat(10_000),
            headers: headers
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn token_of(view: &CheckView) -> Option<String> {
        match view.credentials() {
            Credentials::Bearer(token) => Some(token.expose().to_owned()),
            Credentials::None | Credentials::Malformed => None,
        }
    }

    #[test]
    fn the_bearer_token_comes_from_the_headers_map() {
        let check = view(
            with_headers(&[(":path", "/v1/items"), ("authorization", "Bearer abc.def")]),
            &[],
        );
        assert_eq!(token_of(&check).as_deref(), Some("abc.def"));
        let check = view(with_headers(&[("accept", "*/*")]), &[]);
        assert!(matches!(check.credentials(), Credentials::None));
        // Keys of Envoy's map are lower case; another spelling is not it.
        let check = view(with_headers(&[("Authorization", "Bearer abc")]), &[]);
        assert!(matches!(check.credentials(), Credentials::None));
        assert!(matches!(
            CheckView::default().credentials(),
            Credentials::None
        ));
    }

    #[test]
    fn raw_headers_win_and_a_repeated_authorization_is_malformed() {
        let raw = |entries: &[(&str, &[u8])]| HeaderMap {
            headers: entries
                .iter()
                .map(|(key, value)| HeaderValue {
                    key: (*key).to_owned(),
                    raw_value: value.to_vec(),
                    ..Default::default()
                })
                .collect(),
        };
        let mut http = with_headers(&[("authorization", "Bearer from-the-map")]);
        http.header_map = Some(raw(&[("Authorization", b"Bearer from-raw")]));
        assert_eq!(
            token_of(&view(http.clone(), &[])).as_deref(),
            Some("from-raw")
        );

        http.header_map = Some(raw(&[
            ("authorization", b"Bearer one"),
            ("authorization", b"Bearer two"),
        ]));
        assert!(matches!(
            view(http.clone(), &[]).credentials(),
            Credentials::Malformed
        ));

        http.header_map = Some(raw(&[("authorization", b"Bearer \xff")]));
        assert!(matches!(
            view(http, &[]).credentials(),
            Credentials::Malformed
        ));
    }

    #[test]
    fn the_required_role_comes_from_the_context_extensions() {
        let roles = |extensions: &[(&str, &str)]| {
            view(with_headers(&[]), extensions)
                .required_roles()
                .map(|roles| {
                    roles
                        .iter()
                        .map(|role| role.as_str().to_owned())
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(roles(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            roles(&[("authd_required_role", "admin"), ("team", "x")]).unwrap(),
            ["admin"]
        );
        let misspelt = roles(&[("authd_required_roles", "admin")]).unwrap_err();
        assert!(
            misspelt.to_string().contains("authd_required_roles"),
            "{misspelt}"
        );
        assert!(roles(&[("authd_required_role", "two words")]).is_err());
        assert_eq!(CheckView::default().required_roles().unwrap().len(), 0);
    }
}
