//! A query's answer as JSON-ready rows, and its text renderings.

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use serde_json::Value;

use crate::AnalyticsError;
use crate::convert::cell;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The Arrow type as DataFusion prints it, e.g. `Int64`, `Utf8`,
    /// `Timestamp(µs, "UTC")`.
    pub data_type: String,
}

/// Rows hold JSON values: numbers as numbers, timestamps as RFC 3339 strings (UTC),
/// dates as `YYYY-MM-DD`, nulls as null.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub columns: Vec<ColumnInfo>,
    pub rows: Vec<Vec<Value>>,
    /// More rows existed than `max_result_rows`; `rows` holds the first ones.
    pub truncated: bool,
    pub elapsed_ms: u64,
}

impl QueryResult {
    /// The index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// RFC 4180 CSV with a header line; nulls are empty fields.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| csv_field(&c.name)).collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for row in &self.rows {
            let fields: Vec<String> = row.iter().map(|v| csv_field(&plain(v))).collect();
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// An aligned text table for terminals; a last line says when rows were cut.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(self.columns.iter().map(|c| c.name.clone()));
        for row in &self.rows {
            table.add_row(row.iter().map(|v| match v {
                Value::Null => "NULL".to_owned(),
                v => plain(v),
            }));
        }
        let mut out = table.to_string();
        let n = self.rows.len();
        let plural = if n == 1 { "" } else { "s" };
        out.push_str(&format!("\n{n} row{plural}"));
        if self.truncated {
            out.push_str(" (truncated)");
        }
        out.push_str(&format!(", {} ms\n", self.elapsed_ms));
        out
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Gathers rows up to the limit.
pub(crate) struct Collector {
    result: QueryResult,
    max: usize,
}

impl Collector {
    pub fn new(schema: &Schema, max: usize) -> Collector {
        let columns = schema
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect();
        Collector {
            result: QueryResult {
                columns,
                rows: Vec::new(),
                truncated: false,
                elapsed_ms: 0,
            },
            max,
        }
    }

    /// Adds a batch's rows; returns true once the limit is reached and more rows were
    /// seen (the result is then truncated).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<bool, AnalyticsError> {
        for row in 0..batch.num_rows() {
            if self.result.rows.len() == self.max {
                self.result.truncated = true;
                return Ok(true);
            }
            let values = batch
                .columns()
                .iter()
                .map(|array| cell(array.as_ref(), row))
                .collect::<Result<Vec<_>, _>>()?;
            self.result.rows.push(values);
        }
        Ok(false)
    }

    pub fn finish(self) -> QueryResult {
        self.result
    }
}
