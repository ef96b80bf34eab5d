//! The RDB transfer of the replication protocol, shared by a backup
//! (`source`) and a capture follower (`follow`): the handshake, the
//! transfer header after `FULLRESYNC`, and copying the RDB body exactly to
//! its end.

use backup_core::{Error, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncBufReadExt;

use super::conn::{RawConn, RedisUrl};

/// Size of the end marker of a diskless transfer.
pub(crate) const EOF_MARK: usize = 40;

/// How the master sends the RDB.
pub(crate) enum Body {
    /// `$<length>`: a file it wrote to its disk.
    Len(u64),
    /// `$EOF:<mark>`: streamed from a forked child (diskless), ending with
    /// the 40-byte mark.
    Eof([u8; EOF_MARK]),
}

pub(crate) fn refused(url: &RedisUrl, reply: &str) -> Error {
    Error::source_failed(format!(
        "Redis at {} refused replication ({reply}); on managed services that disable SYNC/PSYNC use key mode: `backup create --mode keys` (or ?mode=keys in the URL)",
        url.address()
    ))
}

/// Announces what a replica of ours can take: diskless transfers (`EOF`)
/// and `PSYNC` version 2.
pub(crate) async fn announce(url: &RedisUrl, conn: &mut RawConn) -> Result<()> {
    conn.send(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
        .await?;
    let reply = conn.line().await?;
    if reply.starts_with('-') {
        if reply.contains("NOAUTH") {
            return Err(url.noauth_error());
        }
        if reply.contains("NOPERM") || reply.contains("unknown command") {
            return Err(refused(url, &reply));
        }
        tracing::warn!(reply = %reply, "Server refused REPLCONF capa; continuing without it.");
    }
    Ok(())
}

/// The transfer header after `FULLRESYNC` (`$<length>` or `$EOF:<mark>`).
pub(crate) fn transfer_header(url: &RedisUrl, line: &str) -> Result<Body> {
    if line.starts_with('-') {
        return Err(refused(url, line));
    }
    let Some(spec) = line.strip_prefix('$') else {
        return Err(Error::source_failed(format!(
            "Redis at {}: unexpected reply to PSYNC: {line:.80}",
            url.address()
        )));
    };
    let body = if let Some(mark) = spec.strip_prefix("EOF:") {
        let mark: [u8; EOF_MARK] = mark.as_bytes().try_into().map_err(|_| {
            Error::source_failed(format!(
                "Redis at {}: bad end marker in the transfer header",
                url.address()
            ))
        })?;
        Body::Eof(mark)
    } else {
        Body::Len(spec.trim().parse().map_err(|_| {
            Error::source_failed(format!(
                "Redis at {}: bad RDB length in the transfer header: {spec:.40}",
                url.address()
            ))
        })?)
    };
    Ok(body)
}

impl Body {
    /// `disk` or `diskless`, as the manifest says.
    pub(crate) fn transfer(&self) -> &'static str {
        match self {
            Body::Len(_) => "disk",
            Body::Eof(_) => "diskless",
        }
    }
}

/// Where [`copy_body`] puts the RDB's chunks.
pub(crate) trait ChunkSink {
    /// Takes one chunk; an `Err` stops the copy with that message.
    async fn send(&mut self, b: Bytes) -> std::result::Result<(), String>;
}

/// Bytes gathered from the connection before they are handed to the
/// sink: the connection delivers the RDB in pieces as small as the
/// master's pipe reads (16 KiB), and each piece handed on wakes the
/// parser thread and the pipeline.
const PIECE: usize = 512 << 10;

/// Copies the RDB body to `sink`; returns its size. It reads no byte past
/// the RDB's end, so a connection that goes on with the command stream
/// (a capture follower's) is left right at its first command.
pub(crate) async fn copy_body(
    conn: &mut RawConn,
    body: Body,
    sink: &mut impl ChunkSink,
) -> std::result::Result<u64, String> {
    let addr = conn.addr.clone();
    let mut total = 0u64;
    // Read and not yet handed on.
    let mut acc = BytesMut::with_capacity(PIECE + (64 << 10));
    match body {
        Body::Len(n) => {
            let mut left = n;
            while left > 0 {
                let buf = more(conn, &addr, || format!("{} of {n}", n - left)).await?;
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                acc.extend_from_slice(&buf[..take]);
                conn.io.consume(take);
                left -= take as u64;
                if acc.len() >= PIECE {
                    total += acc.len() as u64;
                    sink.send(acc.split().freeze()).await?;
                }
            }
        }
        Body::Eof(mark) => loop {
            let got = total + acc.len() as u64;
            let buf = more(conn, &addr, || format!("{got}")).await?;
            let old = acc.len();
            acc.extend_from_slice(buf);
            let n = buf.len();
            // The mark ends the RDB; what follows it (a follower's command
            // stream) stays unread. Bytes before `from` were searched.
            let from = old.saturating_sub(EOF_MARK - 1);
            if let Some(at) = find(&acc[from..], &mark).map(|i| i + from) {
                conn.io.consume(at + EOF_MARK - old);
                acc.truncate(at);
                break;
            }
            conn.io.consume(n);
            if acc.len() >= PIECE + EOF_MARK {
                // The last bytes may begin the mark: they wait.
                let out = acc.split_to(acc.len() - (EOF_MARK - 1)).freeze();
                total += out.len() as u64;
                sink.send(out).await?;
            }
        },
    }
    total += acc.len() as u64;
    if !acc.is_empty() {
        sink.send(acc.freeze()).await?;
    }
    Ok(total)
}

/// The bytes the connection has next (waiting for some), or why there
/// are none; `got` says how many RDB bytes came before, for the message.
async fn more<'a>(
    conn: &'a mut RawConn,
    addr: &str,
    got: impl FnOnce() -> String,
) -> std::result::Result<&'a [u8], String> {
    let buf = conn
        .io
        .fill_buf()
        .await
        .map_err(|e| format!("reading the RDB from {addr}: {e}"))?;
    if buf.is_empty() {
        return Err(format!(
            "Redis at {addr} closed the connection after {} RDB bytes, before the RDB's end",
            got()
        ));
    }
    Ok(buf)
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

    struct Gathered(Vec<u8>);

    impl ChunkSink for Gathered {
        async fn send(&mut self, b: Bytes) -> std::result::Result<(), String> {
            self.0.extend_from_slice(&b);
            Ok(())
        }
    }

    /// The copy of `wire` (an RDB body followed by the command stream)
    /// with the size it returns, and what is left on the connection.
    async fn copy(body: Body, wire: Vec<u8>) -> (u64, Vec<u8>, Vec<u8>) {
        let (mut server, client) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            server.write_all(&wire).await.unwrap();
        });
        let mut conn = RawConn {
            io: BufReader::new(Box::new(client)),
            addr: "test".to_owned(),
        };
        let mut sink = Gathered(Vec::new());
        let total = copy_body(&mut conn, body, &mut sink).await.unwrap();
        writer.await.unwrap();
        let mut rest = Vec::new();
        conn.io.read_to_end(&mut rest).await.unwrap();
        (total, sink.0, rest)
    }

    #[tokio::test]
    async fn both_transfers_copy_and_count_exactly_the_rdb() {
        let rdb: Vec<u8> = (0..1_300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stream = b"*1\r\n$4\r\nPING\r\n".to_vec();

        let wire = [rdb.clone(), stream.clone()].concat();
        let (total, got, rest) = copy(Body::Len(rdb.len() as u64), wire).await;
        assert_eq!(
            (total, got == rdb, rest.as_slice()),
            (rdb.len() as u64, true, &stream[..])
        );

        let mark = [b'm'; EOF_MARK];
        let wire = [rdb.clone(), mark.to_vec(), stream.clone()].concat();
        let (total, got, rest) = copy(Body::Eof(mark), wire).await;
        assert_eq!(
            (total, got == rdb, rest.as_slice()),
            (rdb.len() as u64, true, &stream[..])
        );
    }
}
