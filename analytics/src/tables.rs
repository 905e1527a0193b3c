//! The two tables a query may see, built for one scope.
//!
//! Platform scope reads `{root}/warm/{table}/` with `tenant` and `date` as hive
//! partition columns. Tenant scope reads `{root}/warm/{table}/tenant={T}/` only, with
//! `date` from the folders and `tenant` added as the constant `T`: the listing starts
//! inside the tenant's folder, so no other tenant's file is ever listed, opened or
//! pruned away later. Nothing else can reach another folder either: the session holds
//! no other table, URL tables are off, the only table functions (`generate_series`,
//! `range`) read no files, and DDL (which could create an external table) is refused.

use std::sync::Arc;

use aiq_history_store::{HistoryLocation, ObjectPath};
use aiq_sql::layout::{Table, Tier, table_key, tenant_key};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit};

use crate::AnalyticsError;

/// The table as every scope sees it: the file columns, then `tenant` and `date`.
pub(crate) fn visible_schema(table: Table) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .file_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("tenant", DataType::Utf8, false));
    fields.push(Field::new("date", DataType::Date32, false));
    Arc::new(Schema::new(fields))
}

/// All of a table's warm files, every tenant.
pub(crate) fn platform(
    root: &HistoryLocation,
    table: Table,
) -> Result<Arc<dyn TableProvider>, AnalyticsError> {
    let dir = ObjectPath::from(table_key(Tier::Warm, table));
    if missing_locally(root, &dir) {
        return Ok(Arc::new(EmptyTable::new(visible_schema(table))));
    }
    let partitions = vec![
        ("tenant".to_owned(), DataType::Utf8),
        ("date".to_owned(), DataType::Date32),
    ];
    Ok(Arc::new(listing(root, &dir, table, partitions)?))
}

/// A local folder that does not exist (yet) holds no rows; listing it would fail. An
/// object store has no folders: a prefix without objects lists as empty.
fn missing_locally(root: &HistoryLocation, dir: &ObjectPath) -> bool {
    root.local_root().is_some_and(|r| {
        !dir.parts()
            .fold(r.to_path_buf(), |p, part| p.join(part.as_ref()))
            .is_dir()
    })
}

/// One tenant's warm files of a table; see the module doc for why it cannot leak.
pub(crate) fn tenant(
    root: &HistoryLocation,
    table: Table,
    tenant: &str,
) -> Result<Arc<dyn TableProvider>, AnalyticsError> {
    let dir = ObjectPath::from(tenant_key(Tier::Warm, table, tenant));
    if missing_locally(root, &dir) {
        return Ok(Arc::new(EmptyTable::new(visible_schema(table))));
    }
    let files = listing(
        root,
        &dir,
        table,
        vec![("date".to_owned(), DataType::Date32)],
    )?;
    let mut columns: Vec<Expr> = table
        .file_schema()
        .fields()
        .iter()
        .map(|f| Expr::Column(Column::new_unqualified(f.name())))
        .collect();
    columns.push(lit(tenant.to_owned()).alias("tenant"));
    columns.push(Expr::Column(Column::new_unqualified("date")));
    let plan = LogicalPlanBuilder::scan(table.name(), provider_as_source(Arc::new(files)), None)?
        .project(columns)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// Lists only below `dir`: DataFusion walks the `date=` folders under it, and skips
/// those a filter on `date` rules out, before it lists any file.
fn listing(
    root: &HistoryLocation,
    dir: &ObjectPath,
    table: Table,
    partitions: Vec<(String, DataType)>,
) -> Result<ListingTable, AnalyticsError> {
    // Built from the segments directly, so that no character of them is read as a glob.
    let url = ListingTableUrl::try_new(root.folder_url(dir), None)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partitions);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(table.file_schema());
    Ok(ListingTable::try_new(config)?)
}
