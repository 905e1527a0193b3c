//! The two tables a query may see, built for one scope.
//!
//! Platform scope reads `{root}/warm/{table}/` with `tenant` and `date` as hive
//! partition columns. Tenant scope reads `{root}/warm/{table}/tenant={T}/` only, with
//! `date` from the folders and `tenant` added as the constant `T`: the listing starts
//! inside the tenant's folder, so no other tenant's file is ever listed, opened or
//! pruned away later. Nothing else can reach another folder either: the session holds
//! no other table, URL tables are off, the only table functions (`generate_series`,
//! `range`) read no files, and DDL (which could create an external table) is refused.

use std::path::Path;
use std::sync::Arc;

use aiq_sql::layout::{Table, Tier, table_dir, tenant_dir};
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
    root: &Path,
    table: Table,
) -> Result<Arc<dyn TableProvider>, AnalyticsError> {
    let dir = table_dir(root, Tier::Warm, table);
    if !dir.is_dir() {
        return Ok(Arc::new(EmptyTable::new(visible_schema(table))));
    }
    let partitions = vec![
        ("tenant".to_owned(), DataType::Utf8),
        ("date".to_owned(), DataType::Date32),
    ];
    Ok(Arc::new(listing(&dir, table, partitions)?))
}

/// One tenant's warm files of a table; see the module doc for why it cannot leak.
pub(crate) fn tenant(
    root: &Path,
    table: Table,
    tenant: &str,
) -> Result<Arc<dyn TableProvider>, AnalyticsError> {
    let dir = tenant_dir(root, Tier::Warm, table, tenant);
    if !dir.is_dir() {
        return Ok(Arc::new(EmptyTable::new(visible_schema(table))));
    }
    let files = listing(&dir, table, vec![("date".to_owned(), DataType::Date32)])?;
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

fn listing(
    dir: &Path,
    table: Table,
    partitions: Vec<(String, DataType)>,
) -> Result<ListingTable, AnalyticsError> {
    let absolute = std::path::absolute(dir)
        .map_err(|e| AnalyticsError::Internal(format!("cannot resolve {}: {e}", dir.display())))?;
    // Built from the path directly, so that no character of it is read as a glob.
    let url = url::Url::from_directory_path(&absolute).map_err(|()| {
        AnalyticsError::Internal(format!(
            "{} is not a usable folder path",
            absolute.display()
        ))
    })?;
    let url = ListingTableUrl::try_new(url, None)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partitions);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(table.file_schema());
    Ok(ListingTable::try_new(config)?)
}
