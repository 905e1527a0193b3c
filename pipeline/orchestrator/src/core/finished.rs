//! Finished-run markers: for `finished_run_retention_secs` after a run ends, a late
//! duplicate trigger of it starts nothing and a late result is known to be late.
//!
//! A day of finished runs is millions of entries, so a marker is 24 bytes, not a map
//! entry with a tenant string: the run id's 16 bytes, an index into the partition's
//! list of tenants, and the status. Markers live in time buckets (the retention split
//! in 24, at least a minute wide) by when the run ended: a bucket is a sorted vector
//! plus a small hash map for the newest arrivals, merged into the vector when it fills.
//! A lookup is exact (a run id is 128 bits, compared whole): a marker can never make a
//! new run look like a finished one, so nothing legitimate is ever dropped. Expiry
//! drops whole buckets, so a run is remembered up to one bucket width longer than the
//! retention, never shorter.
//!
//! On the changelog, the markers of one transaction are written as a few chunk entries
//! (at most `CHUNK` markers each) under the bucket's time, not one entry per run: a
//! restore reads a thousand times fewer records, and expiry writes one tombstone per
//! chunk.

use std::collections::{BTreeMap, HashMap};

use aiq_topics::{RunId, RunStatus, TenantId};
use chrono::{DateTime, Utc};

use crate::changelog::{FinishedMark, MarkerChunk};

/// Most markers in one changelog chunk: ~70 bytes of JSON each, far below a record's
/// size limit.
pub(super) const CHUNK: usize = 2_000;

/// New markers collected in a bucket's hash map before they are merged into its sorted
/// vector: merging costs a pass over the vector, so it is paid once per this many.
const RECENT_MAX: usize = 4_096;

const STATUSES: [RunStatus; 5] = [
    RunStatus::Running,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::TimedOut,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Mark {
    run: [u8; 16],
    tenant: u32,
    status: u8,
}

#[derive(Default)]
struct Bucket {
    sorted: Vec<Mark>,
    recent: HashMap<[u8; 16], (u32, u8)>,
    /// The changelog chunks holding this bucket's markers, tombstoned on expiry.
    chunks: Vec<u64>,
}

impl Bucket {
    fn get(&self, run: &[u8; 16]) -> Option<(u32, u8)> {
        if let Some(v) = self.recent.get(run) {
            return Some(*v);
        }
        let i = self.sorted.binary_search_by(|m| m.run.cmp(run)).ok()?;
        self.sorted.get(i).map(|m| (m.tenant, m.status))
    }

    fn insert(&mut self, run: [u8; 16], tenant: u32, status: u8) {
        if self.get(&run).is_some() {
            return;
        }
        self.recent.insert(run, (tenant, status));
        if self.recent.len() >= RECENT_MAX {
            self.merge();
        }
    }

    fn merge(&mut self) {
        let mut add: Vec<Mark> = self
            .recent
            .drain()
            .map(|(run, (tenant, status))| Mark {
                run,
                tenant,
                status,
            })
            .collect();
        self.recent.shrink_to(RECENT_MAX);
        self.sorted.append(&mut add);
        // Two sorted runs: the standard sort recognises and merges them in one pass.
        self.sorted.sort_by_key(|m| m.run);
        self.sorted.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }
}

/// A finished run, as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finished {
    pub(super) tenant: TenantId,
    pub(super) status: RunStatus,
}

/// Markers written since the last changelog take, per bucket.
type Pending = BTreeMap<i64, Vec<FinishedMark>>;

pub(super) struct FinishedMarkers {
    width_secs: i64,
    retention_secs: i64,
    tenants: Vec<TenantId>,
    tenant_index: HashMap<TenantId, u32>,
    buckets: BTreeMap<i64, Bucket>,
    pending: Pending,
}

impl FinishedMarkers {
    pub(super) fn new(retention_secs: u64) -> Self {
        let retention_secs = i64::try_from(retention_secs).unwrap_or(i64::MAX / 4);
        Self {
            width_secs: (retention_secs / 24).max(60),
            retention_secs,
            tenants: Vec::new(),
            tenant_index: HashMap::new(),
            buckets: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    fn bucket_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.width_secs) * self.width_secs
    }

    fn tenant_idx(&mut self, tenant: &TenantId) -> u32 {
        if let Some(i) = self.tenant_index.get(tenant) {
            return *i;
        }
        let i = u32::try_from(self.tenants.len()).unwrap_or(u32::MAX);
        self.tenants.push(tenant.clone());
        self.tenant_index.insert(tenant.clone(), i);
        i
    }

    /// Remembers a run that ended, and queues its marker for the changelog.
    pub(super) fn record(
        &mut self,
        run: RunId,
        tenant: &TenantId,
        status: RunStatus,
        at: DateTime<Utc>,
    ) {
        let bucket = self.bucket_of(at);
        self.insert(bucket, run, tenant, status);
        self.pending.entry(bucket).or_default().push(FinishedMark {
            tenant: tenant.clone(),
            run,
            status,
        });
    }

    fn insert(&mut self, bucket: i64, run: RunId, tenant: &TenantId, status: RunStatus) {
        let t = self.tenant_idx(tenant);
        let s = STATUSES.iter().position(|x| *x == status).unwrap_or(0) as u8;
        self.buckets
            .entry(bucket)
            .or_default()
            .insert(*run.as_uuid().as_bytes(), t, s);
    }

    /// A chunk read back from the changelog (restore), or a marker of the format before
    /// chunks (one entry per run), which `record` rewrites as a chunk.
    pub(super) fn restore_chunk(&mut self, bucket: i64, seq: u64, chunk: MarkerChunk) {
        for m in chunk.runs {
            self.insert(bucket, m.run, &m.tenant, m.status);
        }
        self.buckets.entry(bucket).or_default().chunks.push(seq);
    }

    pub(super) fn get(&self, run: &RunId) -> Option<Finished> {
        let key = *run.as_uuid().as_bytes();
        // Newest first: a late duplicate is most likely of a recent run.
        let (t, s) = self.buckets.values().rev().find_map(|b| b.get(&key))?;
        Some(Finished {
            tenant: self.tenants.get(t as usize)?.clone(),
            status: STATUSES.get(s as usize).copied()?,
        })
    }

    pub(super) fn contains(&self, run: &RunId) -> bool {
        let key = *run.as_uuid().as_bytes();
        self.buckets.values().any(|b| b.get(&key).is_some())
    }

    pub(super) fn len(&self) -> usize {
        self.buckets.values().map(Bucket::len).sum()
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The markers recorded since the last take, as chunks `(bucket, seq, chunk)`; `seq`
    /// comes from `next_seq`, the partition's arrival counter.
    pub(super) fn take_pending(&mut self, next_seq: &mut u64) -> Vec<(i64, u64, MarkerChunk)> {
        let mut out = Vec::new();
        for (bucket, marks) in std::mem::take(&mut self.pending) {
            let mut marks = marks.into_iter().peekable();
            while marks.peek().is_some() {
                let runs: Vec<FinishedMark> = marks.by_ref().take(CHUNK).collect();
                let seq = *next_seq;
                *next_seq += 1;
                self.buckets.entry(bucket).or_default().chunks.push(seq);
                out.push((bucket, seq, MarkerChunk { runs }));
            }
        }
        out
    }

    /// Forgets what was recorded since the last take (its transaction was aborted).
    pub(super) fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// Takes up to `max` chunks of buckets past the retention at `now`, for tombstones;
    /// a bucket's markers go once its last chunk is taken (or at once if it has none).
    pub(super) fn expire(&mut self, now: DateTime<Utc>, max: usize) -> Vec<(i64, u64)> {
        let horizon = now.timestamp().saturating_sub(self.retention_secs);
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut entry) = self.buckets.first_entry() else {
                break;
            };
            let bucket = *entry.key();
            if bucket.saturating_add(self.width_secs) > horizon {
                break;
            }
            let chunks = &mut entry.get_mut().chunks;
            let room = max - out.len();
            let cut = chunks.len().saturating_sub(room);
            out.extend(chunks.drain(cut..).map(|seq| (bucket, seq)));
            if chunks.is_empty() {
                entry.remove();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_marker_is_found_with_its_tenant_and_status_and_a_new_run_is_not() {
        let mut m = FinishedMarkers::new(86_400);
        let acme = TenantId::new("acme").unwrap();
        let runs: Vec<RunId> = (0..10_000).map(|_| RunId::random()).collect();
        for (i, r) in runs.iter().enumerate() {
            m.record(
                *r,
                &acme,
                RunStatus::Failed,
                t0() + Duration::seconds(i as i64),
            );
        }
        assert_eq!(m.len(), 10_000);
        for r in &runs {
            assert_eq!(
                m.get(r),
                Some(Finished {
                    tenant: acme.clone(),
                    status: RunStatus::Failed
                })
            );
        }
        assert!(!m.contains(&RunId::random()));
    }

    #[test]
    fn expiry_keeps_every_run_for_the_retention_and_at_most_one_bucket_more() {
        let mut m = FinishedMarkers::new(24 * 3600);
        let acme = TenantId::new("acme").unwrap();
        let run = RunId::random();
        let ended = t0() + Duration::minutes(59);
        m.record(run, &acme, RunStatus::Succeeded, ended);
        let mut seq = 0;
        assert_eq!(m.take_pending(&mut seq).len(), 1);
        let retention = Duration::hours(24);
        assert!(m.expire(ended + retention, 100).is_empty());
        assert!(m.contains(&run));
        // The bucket [00:00, 01:00) goes once 01:00 is past the retention.
        let gone = m.expire(t0() + Duration::hours(1) + retention, 100);
        assert_eq!(gone, vec![(t0().timestamp(), 0)]);
        assert!(!m.contains(&run));
    }

    #[test]
    fn expiry_takes_chunks_up_to_its_budget() {
        let mut m = FinishedMarkers::new(3600);
        let acme = TenantId::new("acme").unwrap();
        let mut seq = 0;
        for _ in 0..5 {
            for _ in 0..(CHUNK + 1) {
                m.record(RunId::random(), &acme, RunStatus::Succeeded, t0());
            }
            m.take_pending(&mut seq);
        }
        let late = t0() + Duration::days(1);
        assert_eq!(m.expire(late, 4).len(), 4);
        assert!(
            m.len() > 0,
            "markers stay until the bucket's last chunk is taken"
        );
        assert_eq!(m.expire(late, 100).len(), 6);
        assert_eq!(m.len(), 0);
    }

    proptest! {
        /// Whatever the order and times, every recorded run is found, every other run
        /// is not, and chunks restored elsewhere give the same answers.
        #[test]
        fn exact_across_merges_and_restores(
            offsets in proptest::collection::vec(0i64..200_000, 1..6_000),
            probes in 0usize..200,
        ) {
            let mut m = FinishedMarkers::new(86_400);
            let tenants = [TenantId::new("a").unwrap(), TenantId::new("b").unwrap()];
            let runs: Vec<RunId> = offsets.iter().map(|_| RunId::random()).collect();
            for (i, (r, off)) in runs.iter().zip(&offsets).enumerate() {
                m.record(*r, &tenants[i % 2], STATUSES[1 + i % 4], t0() + Duration::seconds(*off));
            }
            let mut seq = 0;
            let mut copy = FinishedMarkers::new(86_400);
            for (bucket, s, chunk) in m.take_pending(&mut seq) {
                prop_assert!(chunk.runs.len() <= CHUNK);
                copy.restore_chunk(bucket, s, chunk);
            }
            for (i, r) in runs.iter().enumerate() {
                let want = Some(Finished { tenant: tenants[i % 2].clone(), status: STATUSES[1 + i % 4] });
                prop_assert_eq!(m.get(r), want.clone());
                prop_assert_eq!(copy.get(r), want);
            }
            for _ in 0..probes {
                prop_assert!(!m.contains(&RunId::random()));
            }
        }
    }
}
