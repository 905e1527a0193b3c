//! One Arrow value as JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Number, Value};

use crate::AnalyticsError;

/// The value at `row`: numbers as JSON numbers (non-finite floats as null, as JSON has
/// none), timestamps as RFC 3339 in UTC, dates as `YYYY-MM-DD`, anything else as Arrow
/// prints it.
pub(crate) fn cell(array: &dyn Array, row: usize) -> Result<Value, AnalyticsError> {
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return Ok(Value::Null);
    }
    let v = match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float16 => float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::Timestamp(unit, _) => {
            let micros = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .checked_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .checked_mul(1_000),
                TimeUnit::Microsecond => {
                    Some(array.as_primitive::<TimestampMicrosecondType>().value(row))
                }
                TimeUnit::Nanosecond => {
                    return Ok(rfc3339(DateTime::from_timestamp_nanos(
                        array.as_primitive::<TimestampNanosecondType>().value(row),
                    )));
                }
            };
            match micros.and_then(DateTime::from_timestamp_micros) {
                Some(t) => rfc3339(t),
                None => formatted(array, row)?,
            }
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            match DateTime::from_timestamp(i64::from(days) * 86_400, 0) {
                Some(t) => Value::String(t.date_naive().to_string()),
                None => formatted(array, row)?,
            }
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            match DateTime::from_timestamp_millis(ms) {
                Some(t) => Value::String(t.date_naive().to_string()),
                None => formatted(array, row)?,
            }
        }
        DataType::Dictionary(_, values) => {
            let plain = cast_with_options(&array.slice(row, 1), values, &CastOptions::default())
                .map_err(|e| {
                    AnalyticsError::Internal(format!("cannot unpack a dictionary: {e}"))
                })?;
            cell(plain.as_ref(), 0)?
        }
        _ => formatted(array, row)?,
    };
    Ok(v)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn rfc3339(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn formatted(array: &dyn Array, row: usize) -> Result<Value, AnalyticsError> {
    let f = ArrayFormatter::try_new(array, &FormatOptions::default())
        .map_err(|e| AnalyticsError::Internal(format!("cannot print a value: {e}")))?;
    Ok(Value::String(f.value(row).to_string()))
}
