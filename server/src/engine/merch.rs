//! Merchandising at decide time (issue 22): which pins and boosts are open, what they and the
//! constraint plugins' multipliers do to one request, and how the slate is assembled around the
//! pinned slots. The rules themselves are [`crate::merchandising`]; what they promise is in
//! docs/merchandising.md.
//!
//! The slate: every pin that applies takes its slot with probability 1; the policy (or the
//! baseline order) fills the other slots, top first, from the eligible candidates that are not
//! pinned, with the combined factors (plugin multipliers × open boosts) as promotions and
//! demotions ([`Policy::choose_boosted`](tailor_policies::Policy::choose_boosted)). A policy
//! slot's probability is therefore its probability given the pins, which is what was served.

use serde_json::Value;
use tailor_policies::Choice;
use tailor_wire::DecideRequest;

use super::parse::ItemsRequest;
use crate::merchandising::{open_at, Boost, Merchandising, Pin};
use crate::plugins::PluginStage;

/// Combined factors are kept inside `[MIN_COMBINED, MAX_COMBINED]` (a plugin's 0 becomes the
/// floor: the strongest demotion, not a removal).
pub const MIN_COMBINED: f64 = 1e-4;
pub const MAX_COMBINED: f64 = 1e4;

/// The rules open at one instant, with their index in the config.
#[derive(Debug, Default)]
pub(crate) struct OpenRules<'a> {
    pub pins: Vec<(usize, &'a Pin)>,
    pub boosts: Vec<(usize, &'a Boost)>,
}

impl<'a> OpenRules<'a> {
    pub fn at(m: &'a Merchandising, now_ms: u64) -> Self {
        let now = now_ms as i64;
        let mut pins: Vec<(usize, &Pin)> = m
            .pins
            .iter()
            .enumerate()
            .filter(|(_, p)| open_at(p.starts_at, p.ends_at, now))
            .collect();
        pins.sort_by_key(|(_, p)| p.slot);
        OpenRules {
            pins,
            boosts: m
                .boosts
                .iter()
                .enumerate()
                .filter(|(_, b)| open_at(b.starts_at, b.ends_at, now))
                .collect(),
        }
    }
}

/// Why a pin that is open did not take its slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PinSkip {
    NotACandidate,
    Removed { plugin: String, reason: String },
    SlotBeyondK { k: usize },
}

impl PinSkip {
    pub fn words(&self) -> String {
        match self {
            PinSkip::NotACandidate => "skipped: the item is not among the candidates".into(),
            PinSkip::Removed { plugin, reason } => format!(
                "skipped: constraint plugin {plugin:?} removed the item ({})",
                reason.replace('_', " ")
            ),
            PinSkip::SlotBeyondK { k } => {
                format!("skipped: the answer has {k} slot(s), the pin's slot is beyond them")
            }
        }
    }
}

/// One factor applied to one candidate, for explanations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Adjustment {
    Boost { rule: usize, factor: f64 },
    Plugin { plugin: &'static str, factor: f64 },
}

/// What the open rules and the plugins' multipliers do to one request.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Combined factor per eligible position; empty when every factor is 1.
    pub factors: Vec<f64>,
    /// (slot, eligible position) of every pin that applies, by slot.
    pub pins: Vec<(usize, usize)>,
    /// Open pins that do not apply: (rule, why). Only filled when explaining.
    pub skipped: Vec<(usize, PinSkip)>,
    /// Per eligible position, the factors other than 1. Only filled when explaining.
    pub adjustments: Vec<Vec<Adjustment>>,
}

/// `attributes.<path>`: the key itself, else nested objects along the dots.
fn attribute<'v>(attributes: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = attributes.get(path) {
        return Some(v);
    }
    let mut v = attributes;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Whether a candidate's attributes match a boost: the value itself, or an array holding it.
pub(crate) fn matches(attributes: &Value, boost: &Boost) -> bool {
    match attribute(attributes, &boost.attribute) {
        Some(Value::Array(items)) => items.iter().any(|v| same(v, &boost.value)),
        Some(v) => same(v, &boost.value),
        None => false,
    }
}

/// Plans one request. `values` holds the request's attributes (built whenever a boost is open);
/// `k` is the number of slots to fill (already capped at the eligible count).
pub(crate) fn plan(
    rules: &OpenRules<'_>,
    req: &ItemsRequest,
    values: Option<&DecideRequest>,
    stage: &PluginStage,
    k: usize,
    explain: bool,
) -> Plan {
    let mut plan = Plan::default();
    if explain {
        plan.adjustments = vec![Vec::new(); stage.eligible.len()];
    }
    if !stage.multiplier.is_empty() || !rules.boosts.is_empty() {
        let mut any = false;
        let factors: Vec<f64> = stage
            .eligible
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let mut f = stage.multiplier.get(i).copied().unwrap_or(1.0);
                if let Some(attrs) = values.and_then(|v| v.candidates.get(i)) {
                    for &(rule, b) in &rules.boosts {
                        if matches(&attrs.attributes, b) {
                            f *= b.factor;
                            if explain {
                                plan.adjustments[pos].push(Adjustment::Boost {
                                    rule,
                                    factor: b.factor,
                                });
                            }
                        }
                    }
                }
                let f = f.clamp(MIN_COMBINED, MAX_COMBINED);
                any |= f != 1.0;
                f
            })
            .collect();
        if any {
            plan.factors = factors;
        }
        if explain {
            for &(plugin, i, factor) in &stage.scaled {
                if let Ok(pos) = stage.eligible.binary_search(&i) {
                    plan.adjustments[pos].insert(0, Adjustment::Plugin { plugin, factor });
                }
            }
        }
    }
    for &(rule, pin) in &rules.pins {
        let skip = |plan: &mut Plan, why: PinSkip| {
            if explain {
                plan.skipped.push((rule, why));
            }
        };
        let slot = pin.slot as usize;
        let Some(i) = (0..req.len()).find(|&i| req.id(i) == pin.item) else {
            skip(&mut plan, PinSkip::NotACandidate);
            continue;
        };
        let Ok(pos) = stage.eligible.binary_search(&i) else {
            let (plugin, reason) = stage
                .removed
                .iter()
                .zip(
                    stage
                        .reasons
                        .iter()
                        .chain(std::iter::repeat(&"unspecified")),
                )
                .find(|((_, id, _), _)| *id == pin.item)
                .map(|((p, _, _), r)| (p.clone(), (*r).to_string()))
                .unwrap_or_default();
            skip(&mut plan, PinSkip::Removed { plugin, reason });
            continue;
        };
        if slot >= k {
            skip(&mut plan, PinSkip::SlotBeyondK { k });
            continue;
        }
        plan.pins.push((slot, pos));
    }
    plan
}

impl Plan {
    /// Eligible positions the policy (or the baseline order) chooses from: every one not pinned.
    pub fn free(&self, eligible: usize) -> Vec<usize> {
        (0..eligible)
            .filter(|pos| !self.pins.iter().any(|&(_, p)| p == *pos))
            .collect()
    }

    /// The factors of `free`, or None when every factor is 1.
    pub fn factors_of(&self, free: &[usize]) -> Option<Vec<f64>> {
        (!self.factors.is_empty()).then(|| free.iter().map(|&p| self.factors[p]).collect())
    }

    /// The baseline order over `free` (indexes into it): as sent, the most promoted first when
    /// factors differ (a stable sort, so equal factors keep the order sent).
    pub fn baseline_order(&self, free: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..free.len()).collect();
        if let Some(f) = self.factors_of(free) {
            order.sort_by(|&a, &b| f[b].total_cmp(&f[a]));
        }
        order
    }

    /// The slate of `k` slots: pinned slots with probability 1, the others from `chosen`
    /// (choices over `free`, top first). Returns choices over eligible positions and the pinned
    /// slots.
    pub fn assemble(&self, k: usize, free: &[usize], chosen: &[Choice]) -> (Vec<Choice>, Vec<u32>) {
        let mut out = Vec::with_capacity(k);
        let mut pinned = Vec::new();
        let mut next = chosen.iter();
        for slot in 0..k {
            if let Some(&(_, pos)) = self.pins.iter().find(|(s, _)| *s == slot) {
                out.push(Choice {
                    index: pos,
                    probability: 1.0,
                });
                pinned.push(slot as u32);
            } else if let Some(c) = next.next() {
                out.push(Choice {
                    index: free[c.index],
                    probability: c.probability,
                });
            }
        }
        (out, pinned)
    }

    /// Number of slots the policy fills.
    pub fn policy_slots(&self, k: usize) -> usize {
        k - self.pins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn boost(attribute: &str, value: Value) -> Boost {
        serde_json::from_value(json!({"attribute": attribute, "value": value, "factor": 2}))
            .unwrap()
    }

    #[test]
    fn boosts_match_values_arrays_and_nested_paths() {
        let attrs = json!({"category": "lamps", "tags": ["sale", "new"], "brand": {"name": "Acme"},
            "price": 10, "on_sale": true});
        assert!(matches(&attrs, &boost("category", json!("lamps"))));
        assert!(!matches(&attrs, &boost("category", json!("sofas"))));
        assert!(matches(&attrs, &boost("tags", json!("sale"))));
        assert!(matches(&attrs, &boost("brand.name", json!("Acme"))));
        assert!(matches(&attrs, &boost("price", json!(10.0))));
        assert!(matches(&attrs, &boost("on_sale", json!(true))));
        assert!(!matches(&attrs, &boost("missing", json!("x"))));
        assert!(!matches(&Value::Null, &boost("category", json!("lamps"))));
    }

    #[test]
    fn slates_keep_pins_in_their_slots() {
        let plan = Plan {
            pins: vec![(0, 3), (2, 1)],
            ..Plan::default()
        };
        let free = plan.free(5);
        assert_eq!(free, [0, 2, 4]);
        let chosen = [
            Choice {
                index: 2,
                probability: 0.5,
            },
            Choice {
                index: 0,
                probability: 0.25,
            },
        ];
        let (slate, pinned) = plan.assemble(4, &free, &chosen);
        let ids: Vec<usize> = slate.iter().map(|c| c.index).collect();
        assert_eq!(ids, [3, 4, 1, 0]);
        assert_eq!(pinned, [0, 2]);
        assert_eq!(slate[0].probability, 1.0);
        assert_eq!(slate[1].probability, 0.5);
        assert_eq!(plan.policy_slots(4), 2);
    }

    /// Decision entries written before `pinned` existed (one byte shorter: the empty list's
    /// length) decode with no pinned slot; pinned slots round-trip.
    #[test]
    fn decision_records_before_pins_still_decode() {
        use crate::store::{
            decode_record, encode_record, DecisionRecord, LogEntry, LoggedAction, PinnedSlots,
        };
        let mut d = DecisionRecord {
            seq: 0,
            event_id: "e".into(),
            campaign: String::new(),
            at_ms: 1,
            deadline_ms: 2,
            policy: "thompson".into(),
            seed: 3,
            holdout: false,
            explore: true,
            actions: vec![LoggedAction {
                id: "a".into(),
                probability: 1.0,
                x: Default::default(),
            }],
            candidates: 4,
            request: Vec::new(),
            removed: vec![("p".into(), "b".into(), 1)],
            candidate_set: 5,
            pinned: PinnedSlots(vec![0]),
            audience: Default::default(),
        };
        let bytes = encode_record(&LogEntry::Decision(d.clone()));
        let LogEntry::Decision(back) = decode_record::<LogEntry>("t", &bytes).unwrap() else {
            panic!("a decision");
        };
        assert_eq!(back, d);
        d.pinned = PinnedSlots::default();
        let mut old = encode_record(&LogEntry::Decision(d.clone()));
        assert_eq!(old.pop(), Some(0), "the empty list is the last byte");
        let LogEntry::Decision(back) = decode_record::<LogEntry>("t", &old).unwrap() else {
            panic!("a decision");
        };
        assert_eq!(back, d);
    }

    #[test]
    fn baseline_puts_promoted_first_and_keeps_ties_in_order() {
        let plan = Plan {
            factors: vec![1.0, 0.5, 3.0, 1.0],
            ..Plan::default()
        };
        let free = plan.free(4);
        assert_eq!(plan.baseline_order(&free), [2, 0, 3, 1]);
    }
}
