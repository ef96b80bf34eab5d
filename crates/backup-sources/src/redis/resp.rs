//! Just enough RESP for the replication stream: commands as a master
//! sends them (multi-bulk arrays of bulk strings) and the replies a
//! server gives to a pipeline (RESP2).
//!
//! Every length read from the wire is checked against what remains and a
//! ceiling, so damaged input gives an error, never a huge allocation.

use std::ops::Range;

/// The most arguments one command may have (Redis's own limit for a
/// multi-bulk length is 1024 * 1024 * 1024; commands this size are not
/// met in a stream, so a lower ceiling catches damage early).
const MAX_ARGS: usize = 1 << 24;
/// The longest bulk string (Redis's `proto-max-bulk-len` default, 512 MiB).
const MAX_BULK: usize = 512 << 20;
/// The longest header line (`*N` or `$N`).
const MAX_LINE: usize = 32;

/// A malformed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RespError(pub(crate) String);

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One command: its length in bytes and where each argument lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// Bytes the command takes, header included.
    pub(crate) len: usize,
    /// The arguments, as ranges of the input.
    pub(crate) args: Vec<Range<usize>>,
}

/// Reads an integer header line (`<prefix>N\r\n`) at `at`: the number and
/// the position after the line; `None` when the line is incomplete.
fn header(buf: &[u8], at: usize, prefix: u8) -> Result<Option<(i64, usize)>, RespError> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != prefix {
        return Err(RespError(format!(
            "expected `{}` at byte {at}, found 0x{first:02x}",
            prefix as char
        )));
    }
    let rest = &buf[at + 1..buf.len().min(at + 1 + MAX_LINE)];
    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
        if rest.len() >= MAX_LINE {
            return Err(RespError(format!("a header line at byte {at} is too long")));
        }
        return Ok(None);
    };
    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
    let n = std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            RespError(format!(
                "bad number `{}` at byte {at}",
                String::from_utf8_lossy(line)
            ))
        })?;
    Ok(Some((n, at + 1 + nl + 1)))
}

/// Parses the command at the start of `buf`: `None` when `buf` holds only
/// part of it.
///
/// # Errors
///
/// Input that is not a multi-bulk array of bulk strings.
pub(crate) fn parse_command(buf: &[u8]) -> Result<Option<Command>, RespError> {
    let Some((n, mut at)) = header(buf, 0, b'*')? else {
        return Ok(None);
    };
    let n = usize::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_ARGS).contains(n))
        .ok_or_else(|| RespError(format!("a command with {n} arguments")))?;
    let mut args = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let Some((len, start)) = header(buf, at, b'$')? else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_BULK)
            .ok_or_else(|| RespError(format!("an argument of {len} bytes")))?;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(RespError(format!(
                "an argument at byte {start} does not end with CR LF"
            )));
        }
        args.push(start..end);
        at = end + 2;
    }
    Ok(Some(Command { len: at, args }))
}

/// Encodes a command.
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply read by [`skip_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Bytes it takes.
    pub(crate) len: usize,
    /// The error messages it holds (itself, or inside an array such as
    /// `EXEC`'s).
    pub(crate) errors: Vec<String>,
}

/// Reads past the RESP2 reply at the start of `buf`: `None` when it is
/// incomplete.
///
/// # Errors
///
/// Input that is not a RESP2 reply.
pub(crate) fn skip_reply(buf: &[u8]) -> Result<Option<Reply>, RespError> {
    let mut errors = Vec::new();
    // Values still to read at each nesting level.
    let mut pending: Vec<i64> = vec![1];
    let mut at = 0;
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        match kind {
            b'+' | b'-' | b':' => {
                let Some(nl) = buf[at..].iter().position(|b| *b == b'\n') else {
                    return Ok(None);
                };
                if kind == b'-' {
                    let line = &buf[at + 1..at + nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    errors.push(String::from_utf8_lossy(line).into_owned());
                }
                at += nl + 1;
            }
            b'$' => {
                let Some((len, start)) = header(buf, at, b'$')? else {
                    return Ok(None);
                };
                if len < 0 {
                    at = start;
                    continue;
                }
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= MAX_BULK)
                    .ok_or_else(|| RespError(format!("a reply of {len} bytes")))?;
                if buf.len() < start + len + 2 {
                    return Ok(None);
                }
                at = start + len + 2;
            }
            b'*' => {
                let Some((n, start)) = header(buf, at, b'*')? else {
                    return Ok(None);
                };
                at = start;
                if n > 0 {
                    if n > MAX_ARGS as i64 || pending.len() > 64 {
                        return Err(RespError(format!("an array of {n} replies")));
                    }
                    pending.push(n);
                }
            }
            other => {
                return Err(RespError(format!(
                    "a reply starting with 0x{other:02x} at byte {at}"
                )))
            }
        }
    }
    Ok(Some(Reply { len: at, errors }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_whole_or_not_at_all() {
        let mut buf = Vec::new();
        encode(&mut buf, &[b"SET", b"k", b"v\r\nx"]);
        let c = parse_command(&buf).unwrap().unwrap();
        assert_eq!(c.len, buf.len());
        assert_eq!(&buf[c.args[2].clone()], b"v\r\nx");
        for cut in 0..buf.len() {
            assert_eq!(parse_command(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse_command(b"+OK\r\n").is_err());
        assert!(parse_command(b"*0\r\n").is_err());
        assert!(parse_command(b"*1\r\n$999999999999\r\n").is_err());
        assert!(parse_command(b"*1\r\n$1\r\nxyz").is_err());
    }

    #[test]
    fn replies_are_skipped_with_their_errors() {
        let exec = b"*3\r\n+OK\r\n-WRONGTYPE bad\r\n*2\r\n$1\r\na\r\n$-1\r\n";
        let r = skip_reply(exec).unwrap().unwrap();
        assert_eq!(r.len, exec.len());
        assert_eq!(r.errors, vec!["WRONGTYPE bad".to_owned()]);
        for cut in 0..exec.len() {
            assert_eq!(skip_reply(&exec[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(skip_reply(b":5\r\n+OK\r\n").unwrap().unwrap().len, 4);
        assert_eq!(skip_reply(b"*-1\r\n").unwrap().unwrap().len, 5);
        assert!(skip_reply(b"!x\r\n").is_err());
    }
}
