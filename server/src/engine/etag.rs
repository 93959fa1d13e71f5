//! Entity tags of campaign configs: `GET /admin/v1/campaigns/{id}` answers an `ETag`, and a
//! `PUT` or `DELETE` with `If-Match` is carried out only while the campaign still has that tag
//! (else 412 `precondition_failed`), so an edit based on an older read cannot silently replace a
//! newer config (docs/control-room.md).
//!
//! Single-node mode: the tag is a hash of the stored config (`"h…"`), checked under the
//! registry's admin lock, so it is atomic with the write. Cluster mode: the tag is the config's
//! revision in the key-value bucket (`"r<revision>"`), and the write is a compare-and-set on that
//! revision in the bucket itself, so it fails even when another replica wrote in between
//! (`cluster/entry.rs`).

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{CampaignRuntime, Engine};
use crate::campaign::CampaignConfig;
use crate::error::EngineError;

/// The longest `If-Match` value read; a longer one matches nothing.
const MAX_IF_MATCH: usize = 1_024;

/// An `If-Match` request header (RFC 9110 13.1.1): `*` or a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the campaign must exist (any version).
    Any,
    /// The listed tags (with their quotes); weak tags (`W/"…"`) never match (strong comparison).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Parse a header value. Anything that is not `*` or a list of quoted tags is kept as an
    /// unmatchable list, so the write is refused with 412 (never carried out unconditionally).
    pub fn parse(value: &str) -> IfMatch {
        let value = value.trim();
        if value == "*" {
            return IfMatch::Any;
        }
        if value.len() > MAX_IF_MATCH {
            return IfMatch::Tags(Vec::new());
        }
        IfMatch::Tags(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| t.len() >= 2 && t.starts_with('"') && t.ends_with('"'))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Whether a resource with `etag` passes (strong comparison).
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }

    /// The cluster revisions (`"r<revision>"`) named; empty for `*`.
    pub fn revisions(&self) -> Vec<u64> {
        match self {
            IfMatch::Any => Vec::new(),
            IfMatch::Tags(tags) => tags.iter().filter_map(|t| revision_of_tag(t)).collect(),
        }
    }

    /// `Ok` when `etag` passes, else 412 naming the campaign and its current tag.
    pub fn check(&self, campaign: &str, etag: &str) -> Result<(), EngineError> {
        if self.matches(etag) {
            Ok(())
        } else {
            Err(EngineError::PreconditionFailed {
                id: campaign.to_string(),
                current: etag.to_string(),
            })
        }
    }
}

/// The single-node tag of a config: a hash of its stored JSON.
pub fn config_etag(config: &CampaignConfig) -> String {
    let json = serde_json::to_vec(config).expect("JSON encoding of a config");
    format!("\"h{:016x}\"", xxh3_64_with_seed(&json, 0x19))
}

/// The cluster tag of a config revision.
pub fn revision_etag(revision: u64) -> String {
    format!("\"r{revision}\"")
}

fn revision_of_tag(tag: &str) -> Option<u64> {
    let inner = tag.strip_prefix("\"r")?.strip_suffix('"')?;
    if inner.is_empty() || inner.len() > 20 || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

impl Engine {
    /// The `ETag` of a campaign's current config: its bucket revision in cluster mode (once
    /// applied here), else the hash of its config.
    pub fn campaign_etag(&self, rt: &CampaignRuntime) -> String {
        match self.cluster().and_then(|c| c.revision(&rt.config.id)) {
            Some(revision) => revision_etag(revision),
            None => config_etag(&rt.config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_parses_lists_star_and_refuses_what_it_cannot_read() {
        assert_eq!(IfMatch::parse(" * "), IfMatch::Any);
        let m = IfMatch::parse("\"r3\", W/\"r4\" ,\"h00\"");
        assert!(m.matches("\"r3\""));
        assert!(m.matches("\"h00\""));
        assert!(!m.matches("\"r4\""), "weak tags never match");
        assert_eq!(m.revisions(), vec![3]);
        assert!(!IfMatch::parse("r3").matches("\"r3\""), "unquoted");
        assert!(!IfMatch::parse("").matches("\"r3\""));
        assert!(IfMatch::parse("*").matches("\"anything\""));
        let long = format!("\"r1\",{}", "\"x\",".repeat(MAX_IF_MATCH / 4));
        assert!(!IfMatch::parse(&long).matches("\"r1\""));
        assert_eq!(
            IfMatch::parse("\"r-1\", \"r\", \"rx\"").revisions(),
            Vec::<u64>::new()
        );
        let e = IfMatch::parse("\"h1\"").check("c", "\"h2\"").unwrap_err();
        assert_eq!(e.field(), Some("If-Match"));
        assert!(matches!(e, EngineError::PreconditionFailed { .. }));
        assert_eq!(revision_etag(7), "\"r7\"");
    }
}
