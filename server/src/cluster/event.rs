//! What travels in the stream: one [`Event`] per message, postcard-encoded behind a version
//! byte, with its subject and `Nats-Msg-Id` (JetStream's de-duplication key).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

use crate::store::{DecisionRecord, SendEventRecord};

/// Version byte before every encoded event.
const EVENT_VERSION: u8 = 1;

/// One entry of the cluster log. Decisions are the decision records of the campaign log;
/// rewards travel as the request (not as the joined result), so every replica joins them in
/// stream order and reaches the same outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A decision answered by one replica; every replica logs it as its own.
    Decision {
        campaign: String,
        deferred: bool,
        decision: DecisionRecord,
    },
    /// A reward as received; `at_ms` is the receiving replica's clock, the stream time it
    /// joins at.
    Reward {
        campaign: String,
        event_id: String,
        at_ms: u64,
        value: f64,
        action_id: Option<String>,
        reward_id: Option<String>,
    },
    /// A campaign config written to the key-value bucket at `revision`.
    Config {
        campaign: String,
        revision: u64,
        change: ConfigChange,
    },
    /// A replica's clock, so reward windows close on stream time without traffic.
    Tick { at_ms: u64 },
    /// Everything stored about a send-time shopper is deleted, on every replica
    /// (`cluster/shoppers.rs`).
    ShopperDeleted { shopper: String },
    /// A send-time decision answered by one replica: every replica claims the shopper's
    /// frequency cap, writes the send event and logs the decision (`cluster/send_time.rs`).
    SendTime {
        campaign: String,
        shopper: String,
        send_event: SendEventRecord,
        decision: DecisionRecord,
    },
    /// A deferred decision activated (Personalizer `activate`); `slots`: every deferred slot
    /// of a multi-slot event (`cluster/activate.rs`).
    Activate {
        campaign: String,
        event_id: String,
        slots: bool,
    },
    /// A return (`POST .../adjust`) as received; `at_ms` is the receiving replica's clock, the
    /// stream time its return window is judged at (`cluster/adjust.rs`).
    Adjust {
        campaign: String,
        event_id: String,
        at_ms: u64,
        value: Option<f64>,
        delta: Option<f64>,
        action_id: Option<String>,
        adjustment_id: Option<String>,
    },
    /// A model operation of the Personalizer surface (`cluster/model.rs`).
    Model {
        campaign: String,
        change: ModelChange,
    },
}

/// What a [`Event::Model`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelChange {
    /// A model file exported by `GET model`.
    Import(Vec<u8>),
    /// Every policy starts fresh.
    Reset,
    /// The campaign's decision and reward logs are deleted up to this point.
    DeleteLogs,
}

/// A campaign config change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// The campaign's config as JSON (holdout salt already drawn).
    Create(Vec<u8>),
    /// The new config as JSON.
    Update(Vec<u8>),
    Delete,
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EVENT_VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of an event"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&EVENT_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown event version {v}")),
            None => Err("empty event".into()),
        }
    }

    /// The at-most-once key: a decision per (campaign, event id), a reward per (campaign, event
    /// id, idempotency key), a config change per (campaign, revision). Ticks have none.
    pub fn msg_id(&self) -> Option<String> {
        match self {
            Event::Decision {
                campaign, decision, ..
            }
            | Event::SendTime {
                campaign, decision, ..
            } => Some(format!(
                "d.{:032x}",
                pair_hash(campaign, &decision.event_id)
            )),
            Event::Reward {
                campaign,
                event_id,
                value,
                reward_id,
                action_id,
                ..
            } => {
                // The same rule as a single node's duplicate check: the reward id, else the
                // value; per slot (action).
                let key = match reward_id {
                    Some(id) => xxh3_64_with_seed(id.as_bytes(), 1),
                    None => xxh3_64_with_seed(&value.to_bits().to_be_bytes(), 2),
                };
                let slot = action_id
                    .as_deref()
                    .map_or(0, |a| xxh3_64_with_seed(a.as_bytes(), 3));
                Some(format!(
                    "r.{:032x}.{key:016x}.{slot:016x}",
                    pair_hash(campaign, event_id)
                ))
            }
            Event::Config {
                campaign, revision, ..
            } => Some(format!(
                "c.{:016x}.{revision}",
                xxh3_64_with_seed(campaign.as_bytes(), 0)
            )),
            Event::Tick { .. }
            | Event::ShopperDeleted { .. }
            | Event::Activate { .. }
            | Event::Adjust { .. }
            | Event::Model { .. } => None,
        }
    }

    /// The stream time this event carries, if any.
    pub fn at_ms(&self) -> Option<u64> {
        match self {
            Event::Decision { decision, .. } | Event::SendTime { decision, .. } => {
                Some(decision.at_ms)
            }
            Event::Reward { at_ms, .. } | Event::Tick { at_ms } | Event::Adjust { at_ms, .. } => {
                Some(*at_ms)
            }
            Event::Config { .. }
            | Event::ShopperDeleted { .. }
            | Event::Activate { .. }
            | Event::Model { .. } => None,
        }
    }
}

fn pair_hash(a: &str, b: &str) -> u128 {
    let mut bytes = Vec::with_capacity(a.len() + b.len() + 1);
    bytes.extend_from_slice(a.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(b.as_bytes());
    xxh3_128_with_seed(&bytes, 0)
}

/// The subject of a campaign's events under `prefix`: campaign ids may hold characters that
/// subjects cannot, so the campaign is named by a hash.
pub fn campaign_subject(prefix: &str, campaign: &str) -> String {
    format!(
        "{prefix}.c.{:016x}",
        xxh3_64_with_seed(campaign.as_bytes(), 0)
    )
}

/// The key-value key of a campaign's config: hex of the id (keys allow few characters).
pub fn config_key(campaign: &str) -> String {
    let mut key = String::with_capacity(2 + campaign.len() * 2);
    key.push_str("c_");
    for b in campaign.bytes() {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_keys_separate_what_must_differ() {
        let reward = |reward_id: Option<&str>, value: f64| Event::Reward {
            campaign: "c".into(),
            event_id: "e".into(),
            at_ms: 5,
            value,
            action_id: None,
            reward_id: reward_id.map(str::to_string),
        };
        let e = reward(Some("r1"), 1.0);
        assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        assert_eq!(
            reward(Some("r1"), 1.0).msg_id(),
            reward(Some("r1"), 0.0).msg_id()
        );
        assert_ne!(
            reward(Some("r1"), 1.0).msg_id(),
            reward(Some("r2"), 1.0).msg_id()
        );
        assert_ne!(reward(None, 1.0).msg_id(), reward(None, 0.5).msg_id());
        assert!(Event::decode(&[9, 1, 2]).is_err());
        // Campaign and event id are separated, not concatenated.
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        assert_eq!(config_key("a.b"), "c_612e62");
    }
}
