//! `/ui`: the dashboard, plain HTML, CSS and JavaScript modules embedded in the binary (no Node
//! build, nothing loaded from elsewhere). The page itself is open; every call it makes sends the
//! key typed into it, and it reads the same admin endpoints as any client.

use actix_web::{web, HttpResponse};

use super::auth::{Access, Routes};
use super::error::{ApiError, TransportError};
use super::status;

const INDEX: &str = include_str!("../../ui/index.html");

/// The page's assets by file name: (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../../ui/app.js")),
    ("util.js", JS, include_str!("../../ui/util.js")),
    ("charts.js", JS, include_str!("../../ui/charts.js")),
    ("editor.js", JS, include_str!("../../ui/editor.js")),
    ("preview.js", JS, include_str!("../../ui/preview.js")),
    ("audit.js", JS, include_str!("../../ui/audit.js")),
    ("autopilot.js", JS, include_str!("../../ui/autopilot.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

pub fn configure(r: &mut Routes) {
    r.get("/ui", Access::Public, index)
        .get("/ui/", Access::Public, index)
        .get("/ui/{file}", Access::Public, asset);
}

async fn index() -> HttpResponse {
    status::ok_builder()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(INDEX)
}

async fn asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file.as_str())
        .ok_or_else(|| TransportError::NotFound {
            message: "no such dashboard file".into(),
        })?;
    Ok(status::ok_builder()
        .content_type(*content_type)
        .insert_header(("cache-control", "no-cache"))
        .body(*body))
}
