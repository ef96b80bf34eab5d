//! Records of a database stream (documents, oplog entries) gathered into
//! larger buffers before they reach the chunker. (PostgreSQL rows need no
//! gathering: its workers cut them out of the socket buffer themselves.)

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;

/// Bytes handed on at once: records already received are gathered so that
/// the reader on the other side is not woken once per record.
pub(crate) const GATHER: usize = 256 * 1024;

/// Concatenates the records of `S` into buffers of at least [`GATHER`]
/// bytes, or fewer when no more records are ready yet (so that nothing
/// waits on the server while bytes are held back). `S` is not polled again
/// once it has ended; its errors pass through unchanged.
pub(crate) struct Gather<S> {
    inner: Pin<Box<S>>,
    done: bool,
}

impl<S> Gather<S> {
    pub(crate) fn new(inner: S) -> Self {
        Gather {
            inner: Box::pin(inner),
            done: false,
        }
    }
}

impl<S, B> Stream for Gather<S>
where
    S: Stream<Item = std::io::Result<B>>,
    B: AsRef<[u8]>,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut out: Option<BytesMut> = None;
        while !self.done {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(record))) => {
                    let buf = out.get_or_insert_with(|| BytesMut::with_capacity(GATHER));
                    buf.extend_from_slice(record.as_ref());
                    if buf.len() >= GATHER {
                        break;
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.done = true,
                Poll::Pending if out.is_none() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(out.map(|b| Ok(b.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn gathers_records_in_order() {
        let records = (0..1000).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; 1000]));
        let out: Vec<Bytes> = futures::executor::block_on(
            Gather::new(futures::stream::iter(records))
                .map(|r| r.unwrap())
                .collect(),
        );
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 1_000_000);
        assert!(out[..out.len() - 1].iter().all(|b| b.len() >= GATHER));
        let flat: Vec<u8> = out.concat();
        assert!(flat
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c[0] == (i % 251) as u8));
    }
}
