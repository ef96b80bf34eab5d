//! Listings (`list-type=2`): prefixes, delimiters, pages and
//! continuation tokens.

use std::fmt::Write as _;

use chrono::SecondsFormat;
use http::{Response, StatusCode};

use super::reply::{error, xml_escape, xml_reply, Reply};
use super::request::Target;
use super::state::{Object, State};

/// One entry of a listing, in key order: an object, or a common prefix
/// when a delimiter groups keys.
enum Entry<'a> {
    Object(&'a str, &'a Object),
    Prefix(String),
}

/// `GET /BUCKET?list-type=2...`: a page of the bucket's objects.
pub(super) fn list(state: &State, target: &Target) -> Reply {
    let Some(objects) = state.buckets.get(&target.bucket) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    };
    let prefix = target.param("prefix").unwrap_or("");
    let delimiter = target.param("delimiter").filter(|d| !d.is_empty());
    let max_keys = target
        .param("max-keys")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(usize::MAX)
        .min(state.page_size)
        .max(1);
    let token = match target.param("continuation-token") {
        Some(token) => match decode_token(token) {
            Some(key) => Some(key),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "Invalid continuation token.",
                )
            }
        },
        None => None,
    };
    let after = match (token, target.param("start-after")) {
        (Some(t), Some(s)) => Some(if t.as_str() >= s { t } else { s.to_owned() }),
        (Some(t), None) => Some(t),
        (None, Some(s)) => Some(s.to_owned()),
        (None, None) => None,
    };

    let mut entries: Vec<Entry<'_>> = Vec::new();
    for (key, object) in objects.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        let rest = &key[prefix.len()..];
        match delimiter.and_then(|d| rest.find(d).map(|i| (d, i))) {
            Some((d, i)) => {
                let common = format!("{prefix}{}{d}", &rest[..i]);
                if !matches!(entries.last(), Some(Entry::Prefix(p)) if *p == common) {
                    entries.push(Entry::Prefix(common));
                }
            }
            None => entries.push(Entry::Object(key, object)),
        }
    }
    let key_of = |e: &Entry<'_>| match e {
        Entry::Object(k, _) => (*k).to_owned(),
        Entry::Prefix(p) => p.clone(),
    };
    let remaining: Vec<&Entry<'_>> = entries
        .iter()
        .filter(|e| {
            after
                .as_ref()
                .is_none_or(|a| key_of(e).as_str() > a.as_str())
        })
        .collect();
    let page = &remaining[..remaining.len().min(max_keys)];
    let truncated = remaining.len() > page.len();

    let mut xml = String::from("<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>");
    let _ = write!(
        xml,
        "<Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max_keys}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&target.bucket),
        xml_escape(prefix),
        page.len()
    );
    for entry in page {
        match entry {
            Entry::Object(key, object) => write!(
                xml,
                "<Contents><Key>{}</Key><Generation>{}</Generation><MetaGeneration>{}</MetaGeneration><LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                xml_escape(key),
                object.generation,
                object.metageneration,
                object.updated.to_rfc3339_opts(SecondsFormat::Millis, true),
                xml_escape(&object.etag),
                object.data.len()
            ),
            Entry::Prefix(p) => write!(xml, "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", xml_escape(p)),
        }
        .unwrap_or_default();
    }
    if truncated {
        if let Some(last) = page.last() {
            let _ = write!(
                xml,
                "<NextContinuationToken>{}</NextContinuationToken>",
                encode_token(&key_of(last))
            );
        }
    }
    xml.push_str("</ListBucketResult>");
    xml_reply(Response::builder().status(StatusCode::OK), xml)
}

/// Continuation tokens are opaque to clients: hex of the last key.
fn encode_token(key: &str) -> String {
    key.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The key a continuation token names; `None` for a bad token.
fn decode_token(token: &str) -> Option<String> {
    if token.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            decode_token(&encode_token("data/ab/abc")).as_deref(),
            Some("data/ab/abc")
        );
        assert_eq!(decode_token("zz"), None);
    }
}
