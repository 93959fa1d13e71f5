//! A campaign's learned state as a portable file (export, import, reset), for the
//! Personalizer-compatible `model` calls. Every change is written as a snapshot under the
//! campaign's books lock, so recovery never replays rewards on top of an imported or reset model.

use serde::{Deserialize, Serialize};
use tailor_policies::{FeaturizerConfig, Policy};

use super::{snapshot_of, Books, BooksPart, CampaignRuntime, Engine, Learner};
use crate::error::EngineError;

/// First bytes of every model file.
const MAGIC: &[u8; 8] = b"TAILORM1";

/// What a model file holds: the featurizer it was learned with and each policy's state.
#[derive(Debug, Serialize, Deserialize)]
struct ModelFile {
    campaign: String,
    featurizer: FeaturizerConfig,
    /// (policy name, postcard-encoded runtime policy).
    policies: Vec<(String, Vec<u8>)>,
}

impl Engine {
    /// Run `f` on the live runtime of `campaign` with its books and learner locked, then write
    /// a snapshot.
    fn with_books<T>(
        &self,
        campaign: &str,
        f: impl Fn(&CampaignRuntime, &mut Books, &mut Learner) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.with_live(self.campaign(campaign)?, |rt| {
            let mut books = rt.books.lock();
            let mut learner = rt.learner.write();
            let out = f(rt, &mut books, &mut learner)?;
            self.store.put_snapshot(
                &rt.config.id,
                &snapshot_of(BooksPart::of(&books), &learner, rt.send_time.as_ref()),
            )?;
            Ok(out)
        })
    }

    /// The campaign's learned state as bytes (`application/octet-stream`).
    pub fn export_model(&self, campaign: &str) -> Result<Vec<u8>, EngineError> {
        let rt = self.campaign(campaign)?;
        let learner = rt.learner.read();
        let file = ModelFile {
            campaign: rt.config.id.clone(),
            featurizer: rt.config.featurizer.clone(),
            policies: learner
                .policies
                .iter()
                .map(|(n, p)| {
                    (
                        n.clone(),
                        postcard::to_stdvec(p).expect("postcard encoding of a policy"),
                    )
                })
                .collect(),
        };
        let mut out = MAGIC.to_vec();
        out.extend(postcard::to_stdvec(&file).expect("postcard encoding of a model"));
        Ok(out)
    }

    /// Replace the learned state of every policy that the file holds with the same config.
    /// Refused (nothing changed) when the featurizer differs or no policy matches. Returns the
    /// names of the policies replaced.
    pub fn import_model(&self, campaign: &str, bytes: &[u8]) -> Result<Vec<String>, EngineError> {
        self.import_model_at(campaign, bytes, super::now_ms())
    }

    /// Check that `bytes` is a model file this server can read, without importing it.
    pub(crate) fn check_model_file(bytes: &[u8]) -> Result<(), EngineError> {
        Self::decode_model(bytes).map(|_| ())
    }

    fn decode_model(bytes: &[u8]) -> Result<(ModelFile, Vec<(String, Policy)>), EngineError> {
        let file: ModelFile = bytes
            .strip_prefix(MAGIC.as_slice())
            .and_then(|rest| postcard::from_bytes(rest).ok())
            .ok_or_else(|| {
                EngineError::invalid("body", "not a model file exported by this server")
            })?;
        let mut decoded = Vec::with_capacity(file.policies.len());
        for (name, b) in &file.policies {
            let p: Policy = postcard::from_bytes(b).map_err(|e| {
                EngineError::invalid_owned("body", format!("policy {name:?} is unreadable: {e}"))
            })?;
            // A crafted file could hold matrices of other sizes than its dimension says: every
            // later decide would panic on them (issue 17, the `record` fuzz target).
            p.check_state().map_err(|e| {
                EngineError::invalid_owned("body", format!("policy {name:?} is unreadable: {e}"))
            })?;
            decoded.push((name.clone(), p));
        }
        Ok((file, decoded))
    }

    /// [`Engine::import_model`] with imported evidence starting to age at `now` (ms): cluster
    /// replicas pass the stream time, so they all hold the same state.
    pub(crate) fn import_model_at(
        &self,
        campaign: &str,
        bytes: &[u8],
        now: u64,
    ) -> Result<Vec<String>, EngineError> {
        let (file, decoded) = Self::decode_model(bytes)?;
        self.with_books(campaign, |rt, _books, learner| {
            if file.featurizer != rt.config.featurizer {
                return Err(EngineError::invalid(
                    "body",
                    "the model was learned with another featurizer configuration than the campaign's",
                ));
            }
            let matches: Vec<usize> = learner
                .policies
                .iter()
                .enumerate()
                .filter(|(_, (n, p))| {
                    decoded
                        .iter()
                        .any(|(dn, dp)| {
                            dn == n && dp.config() == p.config() && dp.dimension() == p.dimension()
                        })
                })
                .map(|(i, _)| i)
                .collect();
            if matches.is_empty() {
                return Err(EngineError::invalid(
                    "body",
                    "the model holds no policy with the campaign's current policy configuration",
                ));
            }
            let mut names = Vec::new();
            for i in matches {
                let (n, slot) = &mut learner.policies[i];
                if let Some((_, p)) = decoded.iter().find(|(dn, _)| dn == n) {
                    *slot = p.clone();
                    // The file carries no wall clock: imported evidence starts ageing now.
                    let _ = slot.set_time_half_life(rt.config.half_life_ms());
                    slot.restamp(now);
                    names.push(n.clone());
                }
            }
            Ok(names)
        })
    }

    /// Delete the campaign's decision and reward logs up to now. Learned state is snapshotted
    /// first, so nothing learned is lost and recovery never needs the deleted records. Returns
    /// (decisions, rewards) deleted.
    pub fn delete_logs(&self, campaign: &str) -> Result<(u64, u64), EngineError> {
        let up_to = self.with_books(campaign, |_, books, _| {
            // The reports forget the deleted decisions too (they are computed from the logs).
            books.reports.clear();
            books.audiences.clear();
            Ok(books.decision_seq.max(books.reward_seq))
        })?;
        Ok(self.store.delete_log(campaign, up_to)?)
    }

    /// Forget everything learned: every policy starts fresh (counters are kept).
    pub fn reset_model(&self, campaign: &str) -> Result<(), EngineError> {
        self.reset_model_at(campaign, super::now_ms())
    }

    /// [`Engine::reset_model`] with the fresh policies' clocks at `now` (ms).
    pub(crate) fn reset_model_at(&self, campaign: &str, now: u64) -> Result<(), EngineError> {
        self.with_books(campaign, |rt, _books, learner| {
            let dim = rt.featurizer.dimension();
            for (_, slot) in learner.policies.iter_mut() {
                *slot = slot
                    .config()
                    .build(dim)
                    .map_err(|e| EngineError::policy("policy", e))?;
                let _ = slot.set_time_half_life(rt.config.half_life_ms());
                slot.restamp(now);
            }
            Ok(())
        })
    }
}
