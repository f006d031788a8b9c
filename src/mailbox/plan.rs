//! What an update writes where: the deleted ranges of a spool, the kept bytes after them, and the rounds that move those bytes down.
//!
//! An update removes the deleted ranges, all inside `[S, N)` (S: start of
//! the first one, N: the spool length when the update began), and moves
//! every kept byte after S down, in order, into `[S, W)` with W = N − D
//! (D: deleted bytes). The destination is cut into rounds of at most
//! `limits::JOURNAL_ROUND` bytes: round k writes `[S + kR, S + (k+1)R)`
//! (the last one ends at W). A kept byte never moves up, so the sources of
//! round k lie at or after its destination's start and the rounds after
//! k never read what round k writes: once rounds 0..k are on disk, the
//! rest of the job is still fully described by the file itself.

/// The deleted ranges of one update and where each kept byte goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// S: start of the first deleted range.
    pub start: u64,
    /// N: the spool length the update was planned for.
    pub orig_len: u64,
    /// Deleted ranges `[from, to)`, sorted, disjoint, inside `[S, N)`, the
    /// first starting at S.
    pub deleted: Vec<(u64, u64)>,
    /// Round size R.
    pub round: u64,
    /// Kept ranges after S as (source offset, destination offset, length).
    kept: Vec<(u64, u64, u64)>,
}

impl Plan {
    /// `None` when the ranges are not sorted, disjoint, inside `[start,
    /// orig_len)` with the first at `start`, or there are none.
    pub fn new(orig_len: u64, deleted: Vec<(u64, u64)>, round: u64) -> Option<Plan> {
        let start = deleted.first()?.0;
        let mut kept = Vec::new();
        let (mut src, mut dst) = (start, start);
        for &(from, to) in &deleted {
            if from < src || to <= from || to > orig_len {
                return None;
            }
            if from > src {
                kept.push((src, dst, from - src));
                dst += from - src;
            }
            src = to;
        }
        if orig_len > src {
            kept.push((src, dst, orig_len - src));
        }
        (round > 0).then_some(Plan {
            start,
            orig_len,
            deleted,
            round,
            kept,
        })
    }

    /// D: bytes removed.
    pub fn deleted_bytes(&self) -> u64 {
        self.deleted.iter().map(|&(a, b)| b - a).sum()
    }

    /// W: the length after the update.
    pub fn new_len(&self) -> u64 {
        self.orig_len - self.deleted_bytes()
    }

    /// Number of rounds (0 when nothing after S is kept: a truncate).
    pub fn rounds(&self) -> u64 {
        (self.new_len() - self.start).div_ceil(self.round)
    }

    /// The destination `[from, to)` of round `k`.
    pub fn destination(&self, k: u64) -> (u64, u64) {
        let from = self.start + k * self.round;
        (from, (from + self.round).min(self.new_len()))
    }

    /// Where the bytes of round `k` come from, in order: (source offset,
    /// length) pieces that together fill its destination.
    pub fn sources(&self, k: u64) -> Vec<(u64, u64)> {
        let (from, to) = self.destination(k);
        // The first kept range that reaches past `from`.
        let first = self.kept.partition_point(|&(_, d, len)| d + len <= from);
        let mut out = Vec::new();
        for &(src, dst, len) in &self.kept[first..] {
            if dst >= to {
                break;
            }
            let a = from.max(dst);
            let b = to.min(dst + len);
            out.push((src + (a - dst), b - a));
        }
        out
    }

    /// The deleted bytes cut wherever a round's destination ends, at W
    /// and at W + `marker_len`: however far the update got, its write
    /// frontier falls between pieces, so each piece is either all
    /// overwritten by rounds (and checked by their hashes) or all still
    /// what the update began with. At most one piece per deleted range,
    /// per round and two more.
    pub fn deleted_pieces(&self, marker_len: u64) -> Vec<(u64, u64)> {
        let w = self.new_len();
        let mut out = Vec::new();
        for &(from, to) in &self.deleted {
            let mut at = from;
            while at < to {
                let round_end = match at < w {
                    true => self.destination((at - self.start) / self.round).1,
                    false => u64::MAX,
                };
                let cut = [round_end, w, w.saturating_add(marker_len), to]
                    .into_iter()
                    .filter(|&c| c > at)
                    .min()
                    .unwrap_or(to);
                out.push((at, cut));
                at = cut;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_cover_the_kept_bytes_in_order_and_never_read_ahead_of_writes() {
        // 0..100: deleted 10..20, 35..36, 90..100; rounds of 7.
        let plan = Plan::new(100, vec![(10, 20), (35, 36), (90, 100)], 7).unwrap();
        assert_eq!((plan.start, plan.new_len(), plan.rounds()), (10, 79, 10));
        let original: Vec<u64> = (0..100).collect();
        let mut moved = Vec::new();
        for k in 0..plan.rounds() {
            let (from, to) = plan.destination(k);
            let mut n = 0;
            for (src, len) in plan.sources(k) {
                assert!(src >= from, "round {k} reads before what it writes");
                moved.extend(src..src + len);
                n += len;
            }
            assert_eq!(n, to - from);
        }
        let kept: Vec<u64> = original
            .iter()
            .copied()
            .filter(|&b| b >= 10 && !(10..20).contains(&b) && b != 35 && b < 90)
            .collect();
        assert_eq!(moved, kept);
    }

    #[test]
    fn deleted_pieces_cover_the_deleted_bytes_and_never_straddle_a_frontier() {
        let plan = Plan::new(100, vec![(10, 20), (35, 36), (50, 100)], 7).unwrap();
        let pieces = plan.deleted_pieces(4);
        let covered: Vec<u64> = pieces.iter().flat_map(|&(a, b)| a..b).collect();
        let deleted: Vec<u64> = plan.deleted.iter().flat_map(|&(a, b)| a..b).collect();
        assert_eq!(covered, deleted);
        let w = plan.new_len();
        let frontiers = (0..plan.rounds()).map(|k| plan.destination(k).1);
        for f in frontiers.chain([w, w + 4]) {
            assert!(pieces.iter().all(|&(a, b)| b <= f || a >= f), "{f}");
        }
        let bound = plan.deleted.len() as u64 + plan.rounds() + 2;
        assert!(pieces.len() as u64 <= bound);
    }

    #[test]
    fn bad_ranges_are_no_plan() {
        assert!(Plan::new(100, vec![], 7).is_none());
        assert!(Plan::new(100, vec![(10, 20), (15, 30)], 7).is_none());
        assert!(Plan::new(100, vec![(10, 10)], 7).is_none());
        assert!(Plan::new(100, vec![(10, 101)], 7).is_none());
        let tail = Plan::new(100, vec![(10, 100)], 7).unwrap();
        assert_eq!(tail.rounds(), 0);
    }
}
