//! A request's target (bucket, object, query) and what the headers say:
//! the generation precondition and the content type.

use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode_str;

use super::reply::{error, Reply};
use super::state::{Object, State};

/// The parsed target of a request.
pub(super) struct Target {
    pub(super) bucket: String,
    pub(super) object: Option<String>,
    query: Vec<(String, String)>,
}

impl Target {
    /// The value of query parameter `name`.
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the query names `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }
}

/// The target of a request for `path` with `query`; `None` when it
/// cannot be decoded.
pub(super) fn parse_target(path: &str, query: Option<&str>) -> Option<Target> {
    let path = path.strip_prefix('/')?;
    let (bucket, object) = match path.split_once('/') {
        Some((bucket, object)) if !object.is_empty() => (bucket, Some(object)),
        Some((bucket, _)) => (bucket, None),
        None => (path, None),
    };
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let query = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Target {
        bucket: decode(bucket)?,
        object: match object {
            Some(o) => Some(decode(o)?),
            None => None,
        },
        query,
    })
}

/// Checks `x-goog-if-generation-match` against the current object.
pub(super) fn precondition(
    headers: &HeaderMap,
    current: Option<&Object>,
) -> Result<(), Box<Reply>> {
    let Some(value) = headers.get("x-goog-if-generation-match") else {
        return Ok(());
    };
    let Some(wanted) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid x-goog-if-generation-match.",
        )));
    };
    let holds = match current {
        None => wanted == 0,
        Some(object) => object.generation == wanted,
    };
    if holds {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
        )))
    }
}

/// The request's content type (`application/octet-stream` without one).
pub(super) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// The object a request targets, when it exists.
pub(super) fn object<'a>(state: &'a State, target: &Target) -> Option<&'a Object> {
    state
        .buckets
        .get(&target.bucket)?
        .get(target.object.as_deref()?)
}
