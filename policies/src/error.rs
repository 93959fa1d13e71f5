use thiserror::Error;

/// Everything that can be wrong with a policy or featurizer configuration or state.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PolicyError {
    /// A configuration field is out of range; `field` names it.
    #[error("{field}: {message}")]
    InvalidConfig {
        field: &'static str,
        message: String,
    },
    /// A choice was asked of an empty candidate set.
    #[error("no candidates to choose from")]
    NoCandidates,
}
