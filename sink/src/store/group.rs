//! Which writes travel together. Rows of one partition of one table go to the store in
//! one unlogged batch: for the store that is one request and one mutation instead of one
//! per row, and the listing tables (`runs_by_day` and its indexes, `audit`) take many
//! rows per tenant and day in every sink batch. Rows of different partitions never share
//! a batch: a batch across partitions costs the coordinator more than the requests it
//! saves, and Cassandra warns about (and past a threshold refuses) such batches.

use std::collections::HashMap;
use std::hash::Hash;

/// Rows in one batch at most.
pub const MAX_ROWS: usize = 64;
/// Bound values in one batch at most, in bytes (approximate). Far below the store's
/// mutation and frame limits (16 MiB by default), so that a batch of rows the store
/// takes one by one is taken whole as well.
pub const MAX_BYTES: usize = 256 * 1024;

/// Groups the writes `0..keys.len()` into requests: the writes of one key in the order
/// given, split so that no group exceeds `max_rows` or (unless it is a single write)
/// `max_bytes`. A write without a key (its partition could not be computed) goes alone.
/// Groups come in the order of their first write.
pub fn units<K: Eq + Hash>(
    keys: &[Option<K>],
    sizes: &[usize],
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut open: HashMap<&K, usize> = HashMap::new();
    let mut groups: Vec<(Vec<usize>, usize)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let size = sizes.get(i).copied().unwrap_or(0);
        let Some(key) = key else {
            groups.push((vec![i], size));
            continue;
        };
        if let Some(&g) = open.get(key) {
            let (rows, bytes) = &mut groups[g];
            if rows.len() < max_rows && *bytes + size <= max_bytes {
                rows.push(i);
                *bytes += size;
                continue;
            }
        }
        open.insert(key, groups.len());
        groups.push((vec![i], size));
    }
    groups.into_iter().map(|(rows, _)| rows).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rows_of_one_key_share_a_group_in_their_order() {
        let keys = [Some("a"), Some("b"), Some("a"), None, Some("b"), Some("a")];
        let got = units(&keys, &[1; 6], 10, 100);
        assert_eq!(got, vec![vec![0, 2, 5], vec![1, 4], vec![3]]);
    }

    #[test]
    fn groups_are_split_at_the_row_and_byte_bounds() {
        let keys = [Some(1); 5];
        assert_eq!(
            units(&keys, &[1; 5], 2, 100),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // 60 + 50 > 100: the second row opens a new group; a single row larger than
        // the bound still goes, alone.
        assert_eq!(
            units(&keys, &[60, 50, 30, 500, 1], 10, 100),
            vec![vec![0], vec![1, 2], vec![3], vec![4]]
        );
    }

    proptest! {
        /// Every write lands in exactly one group, every group holds one key and keeps
        /// the writes' order, and the bounds hold.
        #[test]
        fn every_write_once_one_key_per_group_bounds_kept(
            keys in proptest::collection::vec(proptest::option::weighted(0.9, 0u8..5), 0..200),
            sizes in proptest::collection::vec(0usize..300, 200),
            max_rows in 1usize..8,
        ) {
            let got = units(&keys, &sizes, max_rows, 500);
            let mut seen: Vec<usize> = got.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..keys.len()).collect::<Vec<_>>());
            for g in &got {
                prop_assert!(!g.is_empty() && g.len() <= max_rows);
                prop_assert!(g.windows(2).all(|w| w[0] < w[1]));
                if g.len() > 1 {
                    prop_assert!(g.iter().all(|&i| keys[i].is_some() && keys[i] == keys[g[0]]));
                    prop_assert!(g.iter().map(|&i| sizes[i]).sum::<usize>() <= 500);
                }
            }
        }
    }
}
