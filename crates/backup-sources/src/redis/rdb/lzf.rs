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

/// The most bytes of output one byte of LZF data gives (a back reference
/// of 3 bytes copies at most 7 + 255 + 2 bytes).
const MAX_EXPANSION: usize = 88;

/// Decompresses until the end of the input or until at least `stop`
/// bytes are out, and never more than `ulen`.
fn decompress(input: &[u8], ulen: usize, stop: usize) -> Result<Vec<u8>, String> {
    // The stated length comes from the input: it is believed only as far
    // as the data can hold it (a 3-byte back reference gives at most 264
    // bytes), so that no allocation follows from the length field alone.
    let most = input.len().saturating_mul(MAX_EXPANSION);
    if ulen > most {
        return Err(format!(
            "a stated length of {ulen} bytes, more than {} bytes of LZF data can hold",
            input.len()
        ));
    }
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

    /// Found by the `redis_lzf` fuzz target (docs/FUZZING.md): a stated
    /// length of 587 MB over 7 bytes of data was allocated up front.
    #[test]
    fn a_stated_length_the_data_cannot_hold_is_refused() {
        let input = [0u8; 7];
        let err = lzf_decompress(&input, 0x2300_003c).unwrap_err();
        assert!(
            err.contains("more than 7 bytes of LZF data can hold"),
            "{err}"
        );
        assert!(lzf_prefix(&input, 0x2300_003c, 10).is_err());
        // The most one 3-byte back reference can give is accepted.
        let input = [0x00, b'a', 0xe0, 0xff, 0x00];
        assert_eq!(lzf_decompress(&input, 265).unwrap(), vec![b'a'; 265]);
    }
}
