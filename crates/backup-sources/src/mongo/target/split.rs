//! Splitting a stream of concatenated BSON documents.

use bytes::{Buf, BytesMut};

/// Splits concatenated BSON documents.
pub(crate) struct DocSplitter {
    buf: BytesMut,
    max: usize,
}

impl DocSplitter {
    pub(crate) fn new(max: usize) -> Self {
        DocSplitter {
            buf: BytesMut::new(),
            max,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete document, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_doc(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = usize::try_from(len).map_err(|_| format!("negative document length {len}"))?;
        if len < 5 {
            return Err(format!("invalid document length {len}"));
        }
        if len > self.max {
            return Err(format!(
                "a document of {len} bytes is over the server's maximum of {} bytes (maxBsonObjectSize, 16 MiB)",
                self.max
            ));
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len).to_vec()))
    }

    /// Whether bytes of an incomplete document remain.
    pub(crate) fn has_rest(&self) -> bool {
        self.buf.has_remaining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, RawDocumentBuf};

    #[test]
    fn splits_documents() {
        let a = RawDocumentBuf::from_document(&doc! {"_id": 1, "x": "a"}).unwrap();
        let b = RawDocumentBuf::from_document(&doc! {"_id": 2}).unwrap();
        let mut all = a.as_bytes().to_vec();
        all.extend_from_slice(b.as_bytes());
        let mut s = DocSplitter::new(16 * 1024 * 1024);
        s.push(&all[..7]);
        assert_eq!(s.next_doc().unwrap(), None);
        s.push(&all[7..]);
        assert_eq!(s.next_doc().unwrap().unwrap(), a.as_bytes());
        assert_eq!(s.next_doc().unwrap().unwrap(), b.as_bytes());
        assert_eq!(s.next_doc().unwrap(), None);
        assert!(!s.has_rest());
        let mut s = DocSplitter::new(10);
        s.push(a.as_bytes());
        assert!(s.next_doc().unwrap_err().contains("maxBsonObjectSize"));
    }
}
