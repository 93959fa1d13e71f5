//! Ids taken from the request path, fully percent-decoded.
//!
//! actix's router decodes a path segment except for the escapes of `%`, `/` and `+`, which it
//! keeps (so `%2F` cannot split a segment). An id such as a base64 `a+b/c%d==` arrives as
//! `a%2Bb%2Fc%25d==` and would be looked up still encoded; [`segment`] finishes the decoding,
//! once, so every route reads the id the client meant.

use actix_web::HttpRequest;
use percent_encoding::percent_decode_str;

use crate::error::EngineError;

/// The fully decoded value of the path parameter `name`; a 400 naming it when the bytes are not
/// UTF-8. An absent parameter is empty (the router only calls a handler when it matched).
pub fn segment(req: &HttpRequest, name: &str) -> Result<String, EngineError> {
    decode(name, req.match_info().get(name).unwrap_or_default())
}

/// `raw` as the router left it, with the escapes it kept decoded.
pub fn decode(name: &str, raw: &str) -> Result<String, EngineError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| EngineError::invalid(name, "must be UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escapes_actix_keeps_are_decoded_once() {
        assert_eq!(decode("e", "a%2Bb%2Fc%25d==").unwrap(), "a+b/c%d==");
        // A literal `%2F` in an id is sent as `%252F` and must come back as `%2F`, not `/`.
        assert_eq!(decode("e", "x%252F").unwrap(), "x%2F");
        assert_eq!(decode("e", "a+b").unwrap(), "a+b");
        let err = decode("event_id", "%FF").unwrap_err();
        assert_eq!(err.field(), Some("event_id"));
    }
}
