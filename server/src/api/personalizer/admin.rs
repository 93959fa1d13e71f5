//! The Personalizer administration calls: service and policy configuration, the model, logs,
//! evaluations (mapped onto Tailor's off-policy evaluation) and feature importances (501).

use actix_web::{web, HttpResponse};

use super::both;
use super::error::PzError;

pub fn configure(c: &mut web::ServiceConfig) {
    for path in ["/featureImportances", "/featureImportances/{id}"] {
        both(c, path, || web::route().to(feature_importances));
    }
}

async fn feature_importances() -> Result<HttpResponse, PzError> {
    Err(PzError::not_implemented("featureImportances"))
}
