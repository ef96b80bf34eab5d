//! LZF, the compression Redis applies to long strings when
//! `rdbcompression` is on (the format of liblzf).

/// Decompresses LZF data (the format of liblzf, which Redis uses for
/// strings when `rdbcompression` is on) to exactly `ulen` bytes.
///
/// # Errors
///
/// A back reference before the start, a literal run past the end of the
/// input, or an output of another length.
pub fn lzf_decompress(input: &[u8], ulen: usize) -> Result<Vec<u8>, String> {
    let out = decompress(input, ulen, ulen)?;
    if out.len() != ulen {
        return Err(format!(
            "output of {} bytes, the stated length is {ulen}",
            out.len()
        ));
    }
    Ok(out)
}

/// The first `n` bytes (or fewer, when the output is shorter) of LZF data
/// stating `ulen` bytes of output, decompressing no more than needed.
///
/// # Errors
///
/// As [`lzf_decompress`], for the part decompressed.
pub(crate) fn lzf_prefix(input: &[u8], ulen: usize, n: usize) -> Result<Vec<u8>, String> {
    let mut out = decompress(input, ulen, n.min(ulen))?;
    out.truncate(n);
    Ok(out)
}

/// Decompresses until the end of the input or until at least `stop`
/// bytes are out, and never more than `ulen`.
fn decompress(input: &[u8], ulen: usize, stop: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(stop);
    let mut i = 0;
    while i < input.len() && (out.len() < stop || stop == ulen) {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let n = ctrl + 1;
            if i + n > input.len() {
                return Err("literal run past the end of the input".to_owned());
            }
            out.extend_from_slice(&input[i..i + n]);
            i += n;
        } else {
            // A back reference: length in the top 3 bits (7 means one
            // more length byte follows), offset in 13 bits.
            let mut len = ctrl >> 5;
            if len == 7 {
                let Some(&b) = input.get(i) else {
                    return Err("back reference cut short".to_owned());
                };
                len += usize::from(b);
                i += 1;
            }
            let Some(&lo) = input.get(i) else {
                return Err("back reference cut short".to_owned());
            };
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + usize::from(lo) + 1;
            if back > out.len() {
                return Err("back reference before the start of the output".to_owned());
            }
            let start = out.len() - back;
            let n = len + 2;
            if back >= n {
                out.extend_from_within(start..start + n);
            } else {
                // The copy overlaps its own output: byte by byte.
                for k in 0..n {
                    let b = out[start + k];
                    out.push(b);
                }
            }
        }
        if out.len() > ulen {
            return Err(format!("output longer than the stated {ulen} bytes"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_the_start_of_the_whole() {
        // `a`, then back references repeating it (overlapping), then a
        // literal run.
        let input = [0x00, b'a', 0xe0, 0x0a, 0x00, 0x02, b'x', b'y', b'z'];
        let whole = lzf_decompress(&input, 23).unwrap();
        assert_eq!(&whole[..20], &[b'a'; 20]);
        assert_eq!(&whole[20..], b"xyz");
        for n in [0, 1, 10, 20, 22, 23, 40] {
            let p = lzf_prefix(&input, 23, n).unwrap();
            assert_eq!(p, whole[..n.min(23)], "prefix of {n}");
        }
        // A non-overlapping back reference copies a run at once.
        let input = [0x02, b'a', b'b', b'c', 0x20, 0x02];
        assert_eq!(lzf_decompress(&input, 6).unwrap(), b"abcabc");
    }
}
