//! `/ui`: the dashboard, plain HTML and JavaScript embedded in the binary (no Node build). The
//! page itself is open; every call it makes sends the key typed into it, and it reads the same
//! admin endpoints as any client.

use actix_web::HttpResponse;

use super::auth::{Access, Routes};
use super::status;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");

pub fn configure(r: &mut Routes) {
    r.get("/ui", Access::Public, index)
        .get("/ui/", Access::Public, index)
        .get("/ui/app.js", Access::Public, app_js);
}

async fn index() -> HttpResponse {
    status::ok_builder()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(INDEX)
}

async fn app_js() -> HttpResponse {
    status::ok_builder()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(APP_JS)
}
