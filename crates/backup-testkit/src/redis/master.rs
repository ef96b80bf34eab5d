//! A stand-in Redis master that serves a given RDB file to a replica, for
//! RDB files no running `redis-server` writes: older encodings, module
//! auxiliary data, empty keys, bytes after the checksum.
//!
//! It speaks just enough RESP for a backup: `PING`, `AUTH`, `INFO`,
//! `CONFIG GET databases`, `SELECT`, `CLIENT`, `REPLCONF`, and `PSYNC`,
//! which it answers with `+FULLRESYNC`, a disk-style `$<length>` header and
//! the file, then closes the connection. Other commands get an error. It
//! listens on 127.0.0.1 with a free port and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running stand-in master.
#[derive(Debug)]
pub struct FakeMaster {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMaster {
    /// Serves `rdb` to every replica that asks, claiming to be Redis
    /// `version` with 16 databases.
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    pub fn serve(rdb: Vec<u8>, version: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding the fake master's port: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake master address: {e}"))
            .port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let rdb = Arc::new(rdb);
        let version = version.to_owned();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let rdb = Arc::clone(&rdb);
                let version = version.clone();
                std::thread::spawn(move || {
                    let _ = session(conn, &rdb, &version);
                });
            }
        });
        FakeMaster {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one command: a RESP array of bulk strings, or an inline line.
fn command(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<Vec<u8>>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end();
    let Some(n) = line.strip_prefix('*') else {
        return Ok(Some(
            line.split_whitespace()
                .map(|w| w.as_bytes().to_vec())
                .collect(),
        ));
    };
    let n: usize = n.parse().unwrap_or(0);
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let mut head = String::new();
        r.read_line(&mut head)?;
        let len: usize = head.trim_end().trim_start_matches('$').parse().unwrap_or(0);
        let mut arg = vec![0u8; len + 2];
        r.read_exact(&mut arg)?;
        arg.truncate(len);
        args.push(arg);
    }
    Ok(Some(args))
}

fn bulk(s: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", s.len()).into_bytes();
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
    out
}

fn session(conn: TcpStream, rdb: &[u8], version: &str) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    while let Some(args) = command(&mut r)? {
        let name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .unwrap_or_default();
        let arg = |i: usize| {
            args.get(i)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .unwrap_or_default()
        };
        let reply: Vec<u8> = match name.as_str() {
            "PING" => b"+PONG\r\n".to_vec(),
            "AUTH" | "REPLCONF" | "CLIENT" => b"+OK\r\n".to_vec(),
            "SELECT" => {
                if arg(1).parse::<u32>().is_ok_and(|d| d < 16) {
                    b"+OK\r\n".to_vec()
                } else {
                    b"-ERR DB index is out of range\r\n".to_vec()
                }
            }
            "INFO" => bulk(
                format!("# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n")
                    .as_bytes(),
            ),
            "CONFIG" if arg(1) == "get" && arg(2) == "databases" => {
                let mut out = b"*2\r\n".to_vec();
                out.extend(bulk(b"databases"));
                out.extend(bulk(b"16"));
                out
            }
            "PSYNC" | "SYNC" => {
                let mut out = format!("+FULLRESYNC {} 0\r\n", "0".repeat(40)).into_bytes();
                out.extend_from_slice(format!("${}\r\n", rdb.len()).as_bytes());
                out.extend_from_slice(rdb);
                w.write_all(&out)?;
                w.flush()?;
                return Ok(());
            }
            _ => format!("-ERR unknown command '{name}'\r\n").into_bytes(),
        };
        w.write_all(&reply)?;
        w.flush()?;
    }
    Ok(())
}
