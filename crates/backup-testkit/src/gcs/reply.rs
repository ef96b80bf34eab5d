//! Responses: object headers, XML bodies and `<Error>` documents.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::state::Object;

/// A response of the fake.
pub(super) type Reply = Response<Full<Bytes>>;

/// `builder` with the headers that describe `object`.
pub(super) fn with_object_headers(
    builder: http::response::Builder,
    object: &Object,
) -> http::response::Builder {
    builder
        .header("x-goog-generation", object.generation)
        .header("x-goog-metageneration", object.metageneration)
        .header(http::header::ETAG, &object.etag)
        .header(
            http::header::LAST_MODIFIED,
            object
                .updated
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        )
}

/// A response with an XML body.
pub(super) fn xml_reply(builder: http::response::Builder, xml: String) -> Reply {
    builder
        .header(http::header::CONTENT_TYPE, "application/xml; charset=UTF-8")
        .body(Full::new(Bytes::from(xml)))
        .unwrap_or_else(|_| internal())
}

/// An `<Error>` document with `code` and `message`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{}</Message></Error>",
        xml_escape(message)
    );
    xml_reply(Response::builder().status(status), xml)
}

/// A response without a body.
pub(super) fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply
}

/// `500 Internal Server Error`, for a response that could not be built.
pub(super) fn internal() -> Reply {
    empty(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Escapes text for XML.
pub(super) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
