//! [`SortedRecords`]: the records of a plog in icount order.
//!
//! A version-2 plog stores records in emission order (plugins report at different times), so
//! chunks overlap in icount. Sorting merges them: chunks are opened in order of their smallest
//! icount, each is sorted in memory, and the next record is the smallest head among the open
//! chunks. A chunk is opened only once the output reaches its smallest icount, so memory holds the
//! chunks whose ranges overlap the current point — a few in practice (records are late by at most
//! a CPU slice or so) — and a limit turns a pathological file into an error instead of unbounded
//! memory use.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::error::{PlogError, Result};
use crate::reader::PlogReader;
use crate::value::OwnedRecord;

/// Default limit of [`SortedRecords`]: uncompressed bytes of chunks held at once (decoded records
/// take a few times that).
pub const SORT_BUFFER_LIMIT: u64 = 64 << 20;

/// The records of a plog ordered by icount; records with equal icounts stay in file (emission)
/// order. Made by [`PlogReader::sorted`]; yields `Result<OwnedRecord>`, and an error ends the
/// iteration.
pub struct SortedRecords {
    reader: PlogReader,
    /// Chunks that can hold selected records, by (smallest icount, file index): the order in
    /// which they are opened.
    order: Vec<usize>,
    next: usize,
    /// Open chunks: their selected records sorted by icount and reversed (so `pop` yields the
    /// next one), and their uncompressed size.
    open: HashMap<usize, (Vec<OwnedRecord>, u64)>,
    /// The next record of each open chunk: (icount, chunk index); ties go to the earlier chunk.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    buffered: u64,
    limit: u64,
    failed: bool,
}

impl PlogReader {
    /// All records (or those selected with [`Self::select_icounts`]) in icount order, records
    /// with equal icounts in file order; see [`SortedRecords`]. Memory is bounded by
    /// [`SORT_BUFFER_LIMIT`] ([`SortedRecords::with_buffer_limit`] changes it).
    pub fn sorted(self) -> SortedRecords {
        let (from, to) = self.selection();
        let chunks = self.chunks();
        let mut order: Vec<usize> =
            (0..chunks.len()).filter(|&i| chunks[i].max_icount >= from && chunks[i].min_icount <= to).collect();
        order.sort_by_key(|&i| (chunks[i].min_icount, i));
        SortedRecords {
            reader: self,
            order,
            next: 0,
            open: HashMap::new(),
            heads: BinaryHeap::new(),
            buffered: 0,
            limit: SORT_BUFFER_LIMIT,
            failed: false,
        }
    }
}

impl SortedRecords {
    /// Set the most uncompressed chunk bytes held at once; needing more is
    /// [`PlogError::SortLimit`].
    pub fn with_buffer_limit(mut self, bytes: u64) -> Self {
        self.limit = bytes;
        self
    }

    /// The underlying reader (header, completeness, ...).
    pub fn reader(&self) -> &PlogReader {
        &self.reader
    }

    /// Open every chunk that may hold a record at or before the smallest head.
    fn open_due(&mut self) -> Result<()> {
        let (from, to) = self.reader.selection();
        while let Some(&ci) = self.order.get(self.next) {
            let min = self.reader.chunks()[ci].min_icount;
            if self.heads.peek().is_some_and(|Reverse((head, _))| min > *head) {
                break;
            }
            self.next += 1;
            let (mut recs, raw) = self.reader.read_chunk(ci)?;
            recs.retain(|r| r.icount >= from && r.icount <= to);
            // Stable: equal icounts keep their order; reversed so that `pop` yields the first.
            recs.sort_by_key(|r| r.icount);
            recs.reverse();
            let Some(head) = recs.last().map(|r| r.icount) else { continue };
            self.buffered += raw as u64;
            if self.buffered > self.limit {
                return Err(PlogError::SortLimit {
                    path: self.reader.path().to_path_buf(),
                    limit: self.limit,
                    icount: head,
                });
            }
            self.heads.push(Reverse((head, ci)));
            self.open.insert(ci, (recs, raw as u64));
        }
        Ok(())
    }

    fn next_sorted(&mut self) -> Result<Option<OwnedRecord>> {
        self.open_due()?;
        let Some(Reverse((_, ci))) = self.heads.pop() else { return Ok(None) };
        let Some((recs, raw)) = self.open.get_mut(&ci) else { return Ok(None) };
        let rec = recs.pop();
        match recs.last() {
            Some(n) => self.heads.push(Reverse((n.icount, ci))),
            None => {
                self.buffered -= *raw;
                self.open.remove(&ci);
            }
        }
        Ok(rec)
    }
}

impl Iterator for SortedRecords {
    type Item = Result<OwnedRecord>;

    /// Yields each record in icount order, then `None`; an error is yielded once and ends the
    /// iteration.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.next_sorted();
        if r.is_err() {
            self.failed = true;
        }
        r.transpose()
    }
}
