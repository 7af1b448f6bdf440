//! Histogram bucket index.
//!
//! A bounds array has a power-of-two length and ends in [`INF`] (the `+Inf`
//! bucket); unused slots are padded with [`INF`] too. A value belongs to the
//! first bucket whose upper bound is `>=` it, as Prometheus' `le` says, so a
//! value exactly on a boundary lands in that boundary's bucket.

/// The `+Inf` bound: every value (nanoseconds, bytes) is below it, and so
/// below 2^63, which [`bucket_index`] relies on.
pub const INF: u64 = i64::MAX as u64;

/// Index of the first `bounds[i] >= v`: the number of bounds below `v`,
/// counted without a branch. The BPF verifier follows every path through a
/// program: a binary search gives it a distinct index on each of its paths,
/// and a counting loop compiled to one branch per bound gives it 2^N
/// combinations of 0/1 values; the sign of `bound - v` (both below 2^63)
/// gives it none.
#[inline(always)]
pub fn bucket_index<const N: usize>(bounds: &[u64; N], v: u64) -> usize {
    let v = if v < INF { v } else { INF };
    let mut below = 0u64;
    let mut i = 0;
    while i < N {
        // A volatile load: with the bound known (SIZE_BOUNDS is a constant),
        // LLVM turns the subtraction back into a branch per bound.
        // SAFETY: i < N.
        let bound = unsafe { core::ptr::read_volatile(bounds.as_ptr().add(i)) };
        below += bound.wrapping_sub(v) >> 63;
        i += 1;
    }
    let below = below as usize;
    if below < N { below } else { N - 1 }
}

/// Builds a padded bounds array from finite, strictly increasing bounds.
/// Returns `None` when there are too many (the last slot is `+Inf`) or they are
/// not strictly increasing.
pub fn padded<const N: usize>(finite: &[u64]) -> Option<[u64; N]> {
    if finite.len() >= N || finite.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    if finite.last().is_some_and(|&b| b >= INF) {
        return None;
    }
    let mut out = [INF; N];
    out[..finite.len()].copy_from_slice(finite);
    Some(out)
}

/// The number of meaningful slots: the finite bounds plus `+Inf`.
pub fn used_slots<const N: usize>(bounds: &[u64; N]) -> usize {
    bounds.iter().position(|&b| b == INF).map_or(N, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear<const N: usize>(bounds: &[u64; N], v: u64) -> usize {
        bounds.iter().position(|&b| v <= b).unwrap_or(N - 1)
    }

    #[test]
    fn boundaries_are_inclusive() {
        let b: [u64; 8] = padded(&[10, 20, 30]).unwrap();
        assert_eq!(bucket_index(&b, 0), 0);
        assert_eq!(bucket_index(&b, 10), 0);
        assert_eq!(bucket_index(&b, 11), 1);
        assert_eq!(bucket_index(&b, 20), 1);
        assert_eq!(bucket_index(&b, 30), 2);
        assert_eq!(bucket_index(&b, 31), 3, "+Inf");
        assert_eq!(bucket_index(&b, u64::MAX), 3, "+Inf");
        assert_eq!(bucket_index(&b, INF), 3, "+Inf");
        assert_eq!(used_slots(&b), 4);
    }

    #[test]
    fn matches_linear_scan_exhaustively_near_every_bound() {
        let finite: Vec<u64> = (1..32).map(|i| i * i * 1000).collect();
        let b: [u64; 32] = padded(&finite[..31]).unwrap();
        for &bound in &finite {
            for v in [bound - 1, bound, bound + 1] {
                assert_eq!(bucket_index(&b, v), linear(&b, v), "v={v}");
            }
        }
        let small: [u64; 16] = padded(&[1, 2, 3]).unwrap();
        for v in 0..10 {
            assert_eq!(bucket_index(&small, v), linear(&small, v));
        }
    }

    #[test]
    fn full_array() {
        let finite: Vec<u64> = (1..=31).collect();
        let b: [u64; 32] = padded(&finite).unwrap();
        assert_eq!(used_slots(&b), 32);
        for v in 0..40 {
            assert_eq!(bucket_index(&b, v), linear(&b, v));
        }
    }

    #[test]
    fn rejects_bad_bounds() {
        assert!(padded::<4>(&[1, 2, 3, 4]).is_none(), "no room for +Inf");
        assert!(padded::<8>(&[2, 1]).is_none());
        assert!(padded::<8>(&[1, 1]).is_none());
        assert!(padded::<8>(&[1, u64::MAX]).is_none());
        assert!(padded::<8>(&[1, INF]).is_none());
        assert!(padded::<8>(&[]).is_some());
    }
}
