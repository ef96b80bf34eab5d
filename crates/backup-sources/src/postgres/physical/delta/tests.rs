//! Tests of page deltas made while a file is read and applied while its
//! base is restored: the records, a round trip, and a page torn while read.

use std::fs::File;
use std::io::Read;
use std::sync::{Arc, Mutex};

use backup_core::Error;
use bytes::Bytes;

use super::super::lsn::Lsn;
use super::format::{DeltaEntry, HEADER_LEN, MAGIC, MAGIC_PAGES};
use super::patcher::{DeltaSource, Patcher};
use super::reader::{push_record, DeltaReader};

/// A page of `block` bytes with `lsn` in its header, initialised
/// (`pd_upper` set) unless `lsn` is zero, filled with `fill`.
fn page(lsn: u64, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 8192];
    p[..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
    p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
    let upper: u16 = if lsn == 0 && fill == 0 { 0 } else { 8000 };
    p[14..16].copy_from_slice(&upper.to_le_bytes());
    p
}

/// The records of a delta: (block number, its bytes after the block
/// number).
fn records(delta: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < delta.len() {
        let r = &delta[at..];
        let count = usize::from(u16::from_le_bytes([r[4], r[5]]));
        let mut len = 6;
        for _ in 0..count {
            len += 4 + usize::from(u16::from_le_bytes([r[len + 2], r[len + 3]]));
        }
        out.push((u32::from_le_bytes([r[0], r[1], r[2], r[3]]), &r[4..len]));
        at += len;
    }
    out
}

/// `page` with a record's ranges written over it.
fn patched(mut page: Vec<u8>, record: &[u8]) -> Vec<u8> {
    let count = usize::from(u16::from_le_bytes([record[0], record[1]]));
    let mut r = 2;
    for _ in 0..count {
        let off = usize::from(u16::from_le_bytes([record[r], record[r + 1]]));
        let n = usize::from(u16::from_le_bytes([record[r + 2], record[r + 3]]));
        page[off..off + n].copy_from_slice(&record[r + 4..r + 4 + n]);
        r += 4 + n;
    }
    page
}

#[test]
fn records_hold_the_ranges_that_differ() {
    let old = page(0x100, 1);
    let mut new = old.clone();
    assert!(!push_record(&mut Vec::new(), 0, &new, &old));
    // Two changes 4 bytes apart make one range; one far off another.
    new[10] = 0xAA;
    new[15] = 0xBB;
    new[4000] = 0xCC;
    new[8191] = 0xDD;
    let mut out = Vec::new();
    assert!(push_record(&mut out, 7, &new, &old));
    let rec = records(&[&[0u8; HEADER_LEN][..], &out].concat())
        .into_iter()
        .map(|(b, r)| (b, r.to_vec()))
        .collect::<Vec<_>>();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].0, 7);
    assert_eq!(u16::from_le_bytes([rec[0].1[0], rec[0].1[1]]), 3);
    assert_eq!(out.len(), 4 + 2 + (4 + 6) + (4 + 1) + (4 + 1));
    assert_eq!(patched(old.clone(), &rec[0].1), new);
    // Against a zero page (past the base's end): the non-zero bytes.
    let mut out = Vec::new();
    assert!(push_record(&mut out, 9, &old, &vec![0u8; 8192]));
    assert!(out.len() < 8192 + 6 + 4 * 8, "{}", out.len());
}

#[test]
fn deltas_hold_changed_new_and_appended_pages_and_apply_back() {
    let base: Vec<u8> = [page(0x100, 1), page(0x100, 2), page(0x100, 3)].concat();
    // Block 1 changed after the base's start (its LSN and a tuple),
    // block 2 is untouched, block 3 is appended, block 4 is a new zero
    // page (no record: the file's size makes it).
    let mut changed = page(0x900, 2);
    changed[5000..5100].fill(9);
    let now: Vec<u8> = [
        page(0x100, 1),
        changed,
        page(0x100, 3),
        page(0x950, 7),
        page(0, 0),
    ]
    .concat();
    let ended = Arc::new(Mutex::new(None));
    let e2 = ended.clone();
    let mut r = DeltaReader::new(
        std::io::Cursor::new(now.clone()),
        None,
        Box::new(base.clone()),
        8192,
        Lsn(0x800),
        base.len() as u64,
        now.len() as u64,
        Box::new(move |n, b| *e2.lock().unwrap() = Some((n, b))),
    );
    let mut delta = Vec::new();
    r.read_to_end(&mut delta).unwrap();
    assert_eq!(*ended.lock().unwrap(), Some((2, delta.len() as u64)));
    let recs = records(&delta);
    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
    // Block 1: its LSN's changed bytes and the 100 changed ones.
    assert!(recs[0].1.len() < 150, "{}", recs[0].1.len());
    assert_eq!(&delta[..8], MAGIC);

    let entry = DeltaEntry {
        base_lsn: "0/800".into(),
        base_size: base.len() as u64,
        size: now.len() as u64,
        mode: Some(0o600),
        mtime_ns: Some(1_700_000_000_000_000_000),
        ctime_ns: None,
        inode: None,
        pages: 2,
        bytes: Some(delta.len() as u64),
    };
    // The file as a restore writes it: the base, in pieces of 3000
    // bytes, patched by the delta, read in pieces of `piece` bytes.
    let apply = |base: &[u8], entry: &DeltaEntry, delta: &[u8], piece: usize| {
        let mut pieces: Vec<Bytes> = delta
            .chunks(piece)
            .map(Bytes::copy_from_slice)
            .rev()
            .collect();
        let source: DeltaSource = Box::new(move || Ok(pieces.pop()));
        let mut p = Patcher::new(b"base/5/16384".to_vec(), entry, 8192, source);
        let mut out = Vec::new();
        let mut emit = |b: Bytes| {
            out.extend_from_slice(&b);
            Ok(())
        };
        // Pieces of odd sizes, and pieces of many whole pages.
        for part in base[..8000].chunks(3000) {
            p.push(Bytes::copy_from_slice(part), &mut emit)?;
        }
        for part in base[8000..].chunks(2 * 8192 + 192) {
            p.push(Bytes::copy_from_slice(part), &mut emit)?;
        }
        p.finish(&mut emit)?;
        Ok::<_, Error>(out)
    };
    // Odd piece sizes: records and their ranges cross the pieces.
    for piece in [7, 5000, delta.len()] {
        assert!(apply(&base, &entry, &delta, piece).unwrap() == now);
    }

    // A delta of whole pages (what earlier versions wrote) applies too.
    let mut pages = Vec::new();
    pages.extend_from_slice(MAGIC_PAGES);
    pages.extend_from_slice(&delta[8..HEADER_LEN]);
    for b in [1u32, 3, 4] {
        pages.extend_from_slice(&b.to_le_bytes());
        pages.extend_from_slice(&now[b as usize * 8192..(b as usize + 1) * 8192]);
    }
    assert!(apply(&base, &entry, &pages, 5000).unwrap() == now);

    // A file that shrank: the base's pages past its end are dropped.
    let short = DeltaEntry {
        size: 2 * 8192,
        ..entry.clone()
    };
    let mut cut = pages[..HEADER_LEN].to_vec();
    cut[32..40].copy_from_slice(&(2u64 * 8192).to_le_bytes());
    cut.extend_from_slice(&pages[HEADER_LEN..HEADER_LEN + 4 + 8192]);
    assert!(apply(&base, &short, &cut, 5000).unwrap() == now[..2 * 8192]);

    // A flipped byte in a range changes the file (the restore's
    // manifest check then names it).
    let mut bad = delta.clone();
    let n = bad.len();
    bad[n - 100] ^= 1;
    assert!(apply(&base, &entry, &bad, 5000).unwrap() != now);

    // Out-of-order blocks, overlapping ranges, a cut record, another
    // file's header and a base cut inside a page are refused.
    let (first, second) = (recs[0].1.len() + 4, recs[1].1.len() + 4);
    let mut swapped = delta[..HEADER_LEN].to_vec();
    swapped.extend_from_slice(&delta[HEADER_LEN + first..HEADER_LEN + first + second]);
    swapped.extend_from_slice(&delta[HEADER_LEN..HEADER_LEN + first]);
    let e = apply(&base, &entry, &swapped, 5000)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("out of order") && e.contains("base/5/16384"),
        "{e}"
    );
    let mut overlapping = delta[..HEADER_LEN].to_vec();
    overlapping.extend_from_slice(&1u32.to_le_bytes());
    overlapping.extend_from_slice(&2u16.to_le_bytes());
    for off in [100u16, 101] {
        overlapping.extend_from_slice(&off.to_le_bytes());
        overlapping.extend_from_slice(&2u16.to_le_bytes());
        overlapping.extend_from_slice(&[1, 2]);
    }
    let e = apply(&base, &entry, &overlapping, 5000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("overlaps"), "{e}");
    let e = apply(&base, &entry, &delta[..delta.len() - 10], 5000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside a record"), "{e}");
    let e = apply(&base, &short, &delta, 5000).unwrap_err().to_string();
    assert!(e.contains("does not match the index"), "{e}");
    let e = apply(&base[..8000], &entry, &delta, 5000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside a page"), "{e}");
}

#[test]
fn a_page_torn_while_read_goes_into_the_delta() {
    let dir = tempfile::tempdir().unwrap();
    // Read: block 1 with its old header and new bytes after it (a write
    // under way); on disk once the read is done: the new page.
    let mut torn = page(0x900, 9);
    torn[..8].copy_from_slice(&page(0x100, 2)[..8]);
    let base: Vec<u8> = [page(0x100, 1), page(0x100, 2), page(0x100, 3)].concat();
    let read: Vec<u8> = [page(0x100, 1), torn.clone(), page(0x100, 3)].concat();
    let on_disk: Vec<u8> = [page(0x100, 1), page(0x900, 9), page(0x100, 3)].concat();
    let path = dir.path().join("16384");
    std::fs::write(&path, &on_disk).unwrap();
    let mut r = DeltaReader::new(
        std::io::Cursor::new(read),
        Some(File::open(&path).unwrap()),
        Box::new(base),
        8192,
        Lsn(0x800),
        on_disk.len() as u64,
        on_disk.len() as u64,
        Box::new(|_, _| {}),
    );
    let mut delta = Vec::new();
    r.read_to_end(&mut delta).unwrap();
    let recs = records(&delta);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].0, 1);
    // The bytes as read (what the manifest's checksum covers).
    assert_eq!(patched(page(0x100, 2), recs[0].1), torn);
}
