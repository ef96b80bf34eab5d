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
    let mut out: Vec<u8> = Vec::with_capacity(ulen);
    let mut i = 0;
    while i < input.len() {
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
            // Copies may overlap their own output, so go byte by byte.
            for k in 0..len + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > ulen {
            return Err(format!("output longer than the stated {ulen} bytes"));
        }
    }
    if out.len() != ulen {
        return Err(format!(
            "output of {} bytes, the stated length is {ulen}",
            out.len()
        ));
    }
    Ok(out)
}
