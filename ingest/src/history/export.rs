//! Reading a tenant's whole history day by day, for an export: the runs that started
//! each day and the audit events of each day.

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::audit::{AuditRow, entry};
use super::{AuditEntry, HistoryError, HistoryStore};

/// The statements an export reads with, prepared once per export.
pub struct DayReader<'a> {
    store: &'a HistoryStore,
    runs: PreparedStatement,
}

impl HistoryStore {
    pub async fn day_reader(&self) -> Result<DayReader<'_>, HistoryError> {
        let ks = &*self.keyspace;
        let runs = self
            .prepared(
                "exporting runs",
                format!("SELECT run_id FROM {ks}.runs_by_day WHERE tenant = ? AND day = ?"),
            )
            .await?;
        Ok(DayReader { store: self, runs })
    }
}

impl DayReader<'_> {
    /// The ids of the runs that started on `day`.
    pub async fn run_ids(&self, tenant: &str, day: NaiveDate) -> Result<Vec<Uuid>, HistoryError> {
        let rows: Vec<(Uuid,)> = self
            .store
            .all_rows("exporting runs", &self.runs, (tenant, day))
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Every audit event of `day`, oldest first.
    pub async fn audit(
        &self,
        tenant: &str,
        day: NaiveDate,
    ) -> Result<Vec<AuditEntry>, HistoryError> {
        let from = Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN));
        let to = from + chrono::Duration::days(1) - chrono::Duration::milliseconds(1);
        let rows: Vec<AuditRow> = self
            .store
            .all_rows(
                "exporting audit events",
                &self.store.st.audit_of_day,
                (tenant, day, from, to),
            )
            .await?;
        let mut out: Vec<AuditEntry> = rows.into_iter().map(entry).collect();
        out.sort_by_key(|e| (e.at, e.id));
        Ok(out)
    }
}
