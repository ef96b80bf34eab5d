//! PostgreSQL's data page checksums (`data_checksums`), verified while a
//! local base backup reads relation files.
//!
//! The algorithm is PostgreSQL's: 32 interleaved FNV-1a-like sums over the
//! page as 32-bit words (the page's own checksum field counted as zero),
//! two more rounds with zeros, the sums XOR-ed together, the block number
//! XOR-ed in, and the result reduced to `(sum % 65535) + 1`. The block
//! number is the block's position in the relation: within segment file
//! `N` (named `<relfilenode>.N`), block `b` is `N * 131072 + b` for the
//! default 1 GiB segments of 8 KiB pages.

/// Parallel sums.
const N_SUMS: usize = 32;
/// The FNV prime the sums multiply by.
const FNV_PRIME: u32 = 16_777_619;
/// The sums' starting values (PostgreSQL's `checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F_36E9,
    0xB852_5960,
    0x02AB_50AA,
    0x1DE6_6D2A,
    0x79FF_467A,
    0x9BB9_F8A3,
    0x217E_7CD2,
    0x83E1_3D2C,
    0xF8D4_474F,
    0xE39E_B970,
    0x42C6_AE16,
    0x9932_16FA,
    0x7B09_3B5D,
    0x98DA_FF3C,
    0xF718_902A,
    0x0B1C_9CDB,
    0xE58F_764B,
    0x1876_36BC,
    0x5D7B_3BB1,
    0xE73D_E7DE,
    0x92BE_C979,
    0xCCA6_C0B2,
    0x304A_0979,
    0x85AA_43D4,
    0x7831_25BB,
    0x6CA8_EAA2,
    0xE407_EAC6,
    0x4B5C_FC3E,
    0x9FBF_8C76,
    0x15CA_20BE,
    0xF2CA_9FD3,
    0x959B_D756,
];

#[inline]
fn round(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// The checksum of `page` (one block) at block number `blkno`.
pub(crate) fn page_checksum(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    for (row_index, row) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (j, word) in row.chunks_exact(4).enumerate() {
            let mut w = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            // The checksum field (bytes 8..10 of the page) counts as zero.
            if row_index == 0 && j == 2 {
                w &= 0xFFFF_0000;
            }
            sums[j] = round(sums[j], w);
        }
    }
    for _ in 0..2 {
        for s in &mut sums {
            *s = round(*s, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    (folded % 65535 + 1) as u16
}

/// What a page's header says, for verification.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageHeader {
    /// The page's LSN.
    pub(crate) lsn: u64,
    pub(crate) checksum: u16,
    /// `pd_upper` is zero: a new, never-initialised page (no checksum).
    pub(crate) is_new: bool,
}

/// Reads the header fields of a page.
pub(crate) fn page_header(page: &[u8]) -> PageHeader {
    let u32_at = |i: usize| u32::from_le_bytes([page[i], page[i + 1], page[i + 2], page[i + 3]]);
    let u16_at = |i: usize| u16::from_le_bytes([page[i], page[i + 1]]);
    PageHeader {
        lsn: u64::from(u32_at(0)) << 32 | u64::from(u32_at(4)),
        checksum: u16_at(8),
        is_new: u16_at(14) == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_field_does_not_count_and_the_block_number_does() {
        let mut page = vec![0u8; 8192];
        for (i, b) in page.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        let a = page_checksum(&page, 3);
        page[8] ^= 0xff;
        page[9] ^= 0x0f;
        assert_eq!(page_checksum(&page, 3), a);
        assert_ne!(page_checksum(&page, 4), a);
        page[100] ^= 1;
        assert_ne!(page_checksum(&page, 3), a);
        assert!(a >= 1);
    }
}
