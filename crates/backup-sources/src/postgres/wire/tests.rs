//! Unit tests of the wire client: error fields and message framing.

use super::*;

/// A connection over one end of a socket pair, the other end given.
fn pair() -> (WireConn, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let conn = WireConn {
        stream: Stream::Unix(ours),
        buf: vec![0; READ_BUF],
        start: 0,
        end: 0,
        out: BytesMut::new(),
    };
    (conn, theirs)
}

#[test]
fn a_stated_length_is_not_allocated_before_the_bytes_arrive() {
    // 512 MiB stated, 10 bytes sent, then the server goes away.
    let (mut conn, mut server) = pair();
    let mut msg = vec![b'd'];
    msg.extend_from_slice(&(512u32 << 20).to_be_bytes());
    msg.extend_from_slice(b"0123456789");
    server.write_all(&msg).unwrap();
    drop(server);
    let e = conn.next_message(|_, _| ()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    assert!(conn.buf.len() <= 2 * READ_BUF, "{}", conn.buf.len());
}

#[test]
fn a_message_over_a_gigabyte_is_refused() {
    let (mut conn, mut server) = pair();
    server.write_all(&[b'D', 0xff, 0xff, 0xff, 0xf0]).unwrap();
    let e = conn.next_message(|_, _| ()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("over the 1 GiB"), "{e}");
    // Messages that fit still read, across several reads.
    let (mut conn, mut server) = pair();
    let body = vec![7u8; 3 * READ_BUF];
    let writer = std::thread::spawn(move || {
        let mut msg = vec![b'd'];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(&body);
        server.write_all(&msg).unwrap();
        server
    });
    let got = conn.next_message(|tag, b| (tag, b.to_vec())).unwrap();
    assert_eq!(got.0, b'd');
    assert_eq!(got.1, vec![7u8; 3 * READ_BUF]);
    drop(writer.join().unwrap());
}

#[test]
fn error_fields() {
    let body = b"SERROR\0C42501\0Mpermission denied for table t\0Dsome detail\0\0";
    match db_error(body) {
        WireError::Db {
            code,
            message,
            detail,
            ..
        } => {
            assert_eq!(code, "42501");
            assert_eq!(message, "permission denied for table t");
            assert_eq!(detail.as_deref(), Some("some detail"));
        }
        WireError::Io(m) => panic!("{m}"),
    }
}
