//! Multipart uploads: initiate, upload a part, complete and abort.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::reply::{empty, error, internal, with_object_headers, xml_escape, xml_reply, Reply};
use super::request::{content_type, object, precondition, Target};
use super::state::{etag_of, store, State, Upload};

/// The smallest part GCS accepts in a multipart upload, the last excepted.
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// `POST /BUCKET/OBJECT?uploads`: a new upload.
pub(super) fn initiate(state: &mut State, target: &Target, headers: &HeaderMap) -> Reply {
    state.upload_counter += 1;
    let generation = state.next_generation();
    let id = format!("upload-{}-{generation}", state.upload_counter);
    let key = target.object.clone().unwrap_or_default();
    state.uploads.insert(
        id.clone(),
        Upload {
            bucket: target.bucket.clone(),
            key: key.clone(),
            content_type: content_type(headers),
            parts: BTreeMap::new(),
        },
    );
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        xml_escape(&target.bucket),
        xml_escape(&key),
        xml_escape(&id)
    );
    xml_reply(Response::builder().status(StatusCode::OK), xml)
}

/// The upload a request names (`uploadId`), with its id.
fn find_upload<'a>(
    state: &'a mut State,
    target: &Target,
) -> Result<(String, &'a mut Upload), Box<Reply>> {
    let id = target.param("uploadId").unwrap_or("").to_owned();
    match state.uploads.get_mut(&id) {
        Some(upload)
            if upload.bucket == target.bucket
                && Some(upload.key.as_str()) == target.object.as_deref() =>
        {
            Ok((id, upload))
        }
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The requested upload was not found.",
        ))),
    }
}

/// `PUT /BUCKET/OBJECT?partNumber=N&uploadId=ID`: one part.
pub(super) fn upload_part(state: &mut State, target: &Target, body: Bytes) -> Reply {
    let Some(number) = target
        .param("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Invalid partNumber.",
        );
    };
    let (_, upload) = match find_upload(state, target) {
        Ok(found) => found,
        Err(reply) => return *reply,
    };
    let etag = etag_of(&body);
    upload.parts.insert(number, (body, etag.clone()));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::ETAG, etag)
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| internal())
}

/// The body of a completion: the parts, in order.
#[derive(Deserialize)]
struct CompleteRequest {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletePart>,
}

/// One part of a completion.
#[derive(Deserialize)]
struct CompletePart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

/// `POST /BUCKET/OBJECT?uploadId=ID`: the parts become the object.
pub(super) fn complete(
    state: &mut State,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let request: CompleteRequest = match std::str::from_utf8(body)
        .ok()
        .and_then(|text| quick_xml::de::from_str(text).ok())
    {
        Some(request) => request,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                "Invalid CompleteMultipartUpload body.",
            )
        }
    };
    if request.parts.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "At least one part is required.",
        );
    }
    let current = object(state, target).cloned();
    let (id, upload) = match find_upload(state, target) {
        Ok(found) => found,
        Err(reply) => return *reply,
    };
    let mut data = Vec::new();
    let mut previous = 0;
    let count = request.parts.len();
    for (index, part) in request.parts.iter().enumerate() {
        if part.number <= previous {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "Parts must be in ascending order.",
            );
        }
        previous = part.number;
        let Some((bytes, etag)) = upload.parts.get(&part.number) else {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "A listed part was not uploaded.",
            );
        };
        if etag.trim_matches('"') != part.etag.trim().trim_matches('"') {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                "A part's ETag does not match.",
            );
        }
        if index + 1 < count && bytes.len() < MIN_PART_SIZE {
            return error(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            );
        }
        data.extend_from_slice(bytes);
    }
    if let Err(reply) = precondition(headers, current.as_ref()) {
        return *reply;
    }
    let content_type = upload.content_type.clone();
    state.uploads.remove(&id);
    let key = target.object.clone().unwrap_or_default();
    let stored = store(state, &target.bucket, &key, Bytes::from(data), content_type);
    let xml = format!(
        "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        utf8_percent_encode(&target.bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(&key, NON_ALPHANUMERIC),
        xml_escape(&target.bucket),
        xml_escape(&key),
        xml_escape(&stored.etag)
    );
    xml_reply(
        with_object_headers(Response::builder().status(StatusCode::OK), &stored),
        xml,
    )
}

/// `DELETE /BUCKET/OBJECT?uploadId=ID`: the upload is dropped.
pub(super) fn abort(state: &mut State, target: &Target) -> Reply {
    match find_upload(state, target) {
        Ok((id, _)) => {
            state.uploads.remove(&id);
            empty(StatusCode::NO_CONTENT)
        }
        Err(reply) => *reply,
    }
}
