//! The readers the archiver gets for a streamed base backup's files: one
//! fed through a channel as the file's content arrives, one over a range
//! of the spill file (content kept aside until the end of the data
//! directory).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use bytes::Bytes;

/// A piece of a file's content on its way to the reader.
pub(super) enum Piece {
    Data(Bytes),
    End,
    Failed(String),
}

/// Reads a streamed file from its channel.
pub(super) struct ChannelReader {
    pub(super) rx: Receiver<Piece>,
    pub(super) current: Bytes,
    pub(super) done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => self.current = d,
                Ok(Piece::End) => self.done = true,
                Ok(Piece::Failed(m)) => return Err(std::io::Error::other(m)),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the base backup stream ended inside this file",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Reads a range of the spill file.
pub(super) struct SpillReader {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
}

impl Read for SpillReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = (self.end - self.pos) as usize;
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "temporary file shorter than written",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}
