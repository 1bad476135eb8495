//! The W3C Trace Context (`traceparent`) a caller sent, so that the line
//! logged for its call joins its trace.

use tonic::metadata::MetadataMap;

/// The trace id of the call's `traceparent` metadata, when it holds a
/// well-formed one (version, 32 hex digits of trace id, 16 of parent id,
/// flags; neither id all zeros): 32 lower-case hex digits.
pub(super) fn trace_id(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get("traceparent")?.to_str().ok()?.trim();
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; later versions may add more.
    if version.len() != 2 || version == "ff" || !is_hex(version) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let well_formed = |id: &str, len: usize| {
        id.len() == len && is_hex(id) && id.bytes().any(|digit| digit != b'0')
    };
    if !well_formed(trace, 32) || !well_formed(parent, 16) || flags.len() != 2 || !is_hex(flags) {
        return None;
    }
    Some(trace.to_owned())
}

/// Lower-case hex digits only, as the specification has them.
fn is_hex(text: &str) -> bool {
    text.bytes()
        .all(|digit| digit.is_ascii_digit() || (b'a'..=b'f').contains(&digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("traceparent", value.parse().unwrap());
        metadata
    }

    #[test]
    fn a_well_formed_traceparent_gives_its_trace_id() {
        let id = trace_id(&with(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let later = trace_id(&with(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ));
        assert!(later.is_some(), "a later version may carry more");
    }

    #[test]
    fn malformed_traceparents_give_none() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(trace_id(&with(bad)), None, "{bad}");
        }
        assert_eq!(trace_id(&MetadataMap::new()), None);
    }
}
