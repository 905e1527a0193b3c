//! The ready reports: named queries kept as `.sql` files in `sql/reports/`.

/// A named query any scope may run; in a tenant scope it sees that tenant's rows only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    pub title: &'static str,
    pub sql: &'static str,
}

pub const REPORTS: &[Report] = &[
    Report {
        name: "workflow_success",
        title: "Per workflow: finished runs, success rate and duration percentiles",
        sql: include_str!("../../sql/reports/workflow_success.sql"),
    },
    Report {
        name: "failing_steps",
        title: "Per connector and error class: step failures and runs affected",
        sql: include_str!("../../sql/reports/failing_steps.sql"),
    },
    Report {
        name: "runs_per_hour",
        title: "Runs started per hour",
        sql: include_str!("../../sql/reports/runs_per_hour.sql"),
    },
    Report {
        name: "cron_schedule_lag",
        title: "Per workflow: how late cron runs started after their tick",
        sql: include_str!("../../sql/reports/cron_schedule_lag.sql"),
    },
    Report {
        name: "cost_per_tenant",
        title: "Per tenant: step seconds, output bytes and task attempts",
        sql: include_str!("../../sql/reports/cost_per_tenant.sql"),
    },
];

/// The report called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Report> {
    REPORTS.iter().find(|r| r.name == name)
}
