//! Single objects: upload, copy, download (whole or a range) and delete.

use bytes::Bytes;
use chrono::SecondsFormat;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;

use super::reply::{empty, error, internal, with_object_headers, xml_escape, xml_reply, Reply};
use super::request::{content_type, object, precondition, Target};
use super::state::{store, State};

/// `PUT /BUCKET/OBJECT`: an upload.
pub(super) fn put(state: &mut State, target: &Target, headers: &HeaderMap, body: Bytes) -> Reply {
    if let Err(reply) = precondition(headers, object(state, target)) {
        return *reply;
    }
    let key = target.object.clone().unwrap_or_default();
    let stored = store(state, &target.bucket, &key, body, content_type(headers));
    with_object_headers(Response::builder().status(StatusCode::OK), &stored)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| internal())
}

/// `PUT /BUCKET/OBJECT` with `x-goog-copy-source`: a copy.
pub(super) fn copy(state: &mut State, target: &Target, headers: &HeaderMap) -> Reply {
    let source = headers
        .get("x-goog-copy-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let source = source.trim_start_matches('/');
    let Some((bucket, key)) = source.split_once('/') else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-copy-source.",
        );
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let (Some(bucket), Some(key)) = (decode(bucket), decode(key)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-copy-source.",
        );
    };
    let Some(source) = state
        .buckets
        .get(&bucket)
        .and_then(|o| o.get(&key))
        .cloned()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    if let Err(reply) = precondition(headers, object(state, target)) {
        return *reply;
    }
    let dest = target.object.clone().unwrap_or_default();
    let stored = store(
        state,
        &target.bucket,
        &dest,
        source.data,
        source.content_type,
    );
    let body = format!(
        "<?xml version='1.0' encoding='UTF-8'?><CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        stored.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
        xml_escape(&stored.etag)
    );
    xml_reply(
        with_object_headers(Response::builder().status(StatusCode::OK), &stored),
        body,
    )
}

/// `GET` or (without the body) `HEAD /BUCKET/OBJECT`.
pub(super) fn get(state: &State, target: &Target, headers: &HeaderMap, with_body: bool) -> Reply {
    if target
        .param("generation")
        .is_some_and(|g| object(state, target).is_none_or(|o| o.generation.to_string() != g))
    {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    }
    let Some(object) = object(state, target) else {
        return if with_body {
            error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            )
        } else {
            empty(StatusCode::NOT_FOUND)
        };
    };
    if let Some(wanted) = headers
        .get(http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if wanted.trim() != "*" && wanted.trim() != object.etag {
            return error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
            );
        }
    }
    if let Some(wanted) = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if wanted.trim() == "*" || wanted.trim() == object.etag {
            return empty(StatusCode::NOT_MODIFIED);
        }
    }
    let size = object.data.len() as u64;
    let range = match headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(text) => match parse_range(text, size) {
            Ok(range) => Some(range),
            Err(()) => {
                return error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The requested range cannot be satisfied.",
                )
            }
        },
    };
    let mut builder = with_object_headers(Response::builder(), object)
        .header("x-goog-stored-content-length", size)
        .header(http::header::CONTENT_TYPE, &object.content_type)
        .header(http::header::ACCEPT_RANGES, "bytes");
    let data = match range {
        Some((start, end)) => {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                http::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{size}"),
            );
            object.data.slice(start as usize..=end as usize)
        }
        None => object.data.clone(),
    };
    builder = builder.header(http::header::CONTENT_LENGTH, data.len());
    let body = if with_body { data } else { Bytes::new() };
    builder.body(Full::new(body)).unwrap_or_else(|_| internal())
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` into an inclusive range.
fn parse_range(text: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = text.trim().strip_prefix("bytes=").ok_or(())?;
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size.checked_sub(1).ok_or(())?),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| ())?;
            let b: u64 = b.parse().map_err(|_| ())?;
            if b < a {
                return Err(());
            }
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(());
    }
    Ok((start, end))
}

/// `DELETE /BUCKET/OBJECT`.
pub(super) fn delete(state: &mut State, target: &Target) -> Reply {
    let key = target.object.as_deref().unwrap_or("");
    let removed = state
        .buckets
        .get_mut(&target.bucket)
        .and_then(|objects| objects.remove(key));
    match removed {
        Some(_) => empty(StatusCode::NO_CONTENT),
        None => error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-3", 10), Ok((0, 3)));
        assert_eq!(parse_range("bytes=5-", 10), Ok((5, 9)));
        assert_eq!(parse_range("bytes=-4", 10), Ok((6, 9)));
        assert_eq!(parse_range("bytes=8-20", 10), Ok((8, 9)));
        assert_eq!(parse_range("bytes=10-12", 10), Err(()));
        assert_eq!(parse_range("bytes=3-1", 10), Err(()));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
