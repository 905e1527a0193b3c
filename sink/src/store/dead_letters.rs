//! Dead letters into `dead_letters` (the letter, its original bytes) and
//! `dead_letters_by_day` (the listing, under its tenant and under the platform's `*`).
//! Pure, like `rows`: the sink's loop decides nothing here but what is written.
//!
//! A letter's id is derived from its place in the dead-letter topic, so reading the
//! topic again writes the same cells. The sink never writes the `state` columns: the
//! API owns them (lightweight transactions), and a rewrite must not reopen a letter
//! already replayed.

use chrono::{DateTime, Utc};
use scylla::value::{CqlValue, MaybeUnset};
use uuid::Uuid;

use aiq_topics::TenantId;

use super::rows::{Table, Write, day, set, text, ts};

/// The partition of `dead_letters_by_day` that lists every tenant's letters.
pub const PLATFORM: &str = "*";

/// Names the ids of dead letters (UUID v5 over the record's place in the topic).
const NAMESPACE: Uuid = Uuid::from_u128(0x6169_715f_646c_715f_6c65_7474_6572_7331);

/// One record of the dead-letter topic, as the index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub id: Uuid,
    /// Unknown for a record whose key names no tenant (or disagrees with its value).
    pub tenant: Option<TenantId>,
    /// When it was set aside (the dead-letter record's timestamp).
    pub at: DateTime<Utc>,
    pub kind: String,
    pub stage: String,
    pub reason: String,
    /// The topic, partition and offset it was read from.
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The original record's headers, without the dead-letter ones.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// The id of the letter at `offset` of `partition` of the dead-letter topic `topic`,
/// written at `at_ms`: the time tells apart a topic deleted and created again.
pub fn letter_id(topic: &str, partition: i32, offset: i64, at_ms: i64) -> Uuid {
    Uuid::new_v5(
        &NAMESPACE,
        format!("{topic}/{partition}/{offset}/{at_ms}").as_bytes(),
    )
}

pub(super) fn cql(table: Table, ks: &str) -> Option<String> {
    Some(match table {
        Table::DeadLetters => format!(
            "UPDATE {ks}.dead_letters USING TIMESTAMP ? SET tenant = ?, at = ?, kind = ?, \
             stage = ?, reason = ?, topic = ?, source_partition = ?, source_offset = ?, \
             record_key = ?, record_value = ?, record_headers = ? WHERE id = ?"
        ),
        Table::DeadLettersByDay => format!(
            "UPDATE {ks}.dead_letters_by_day USING TIMESTAMP ? SET letter_tenant = ?, \
             kind = ?, stage = ?, reason = ?, topic = ? \
             WHERE tenant = ? AND day = ? AND at = ? AND id = ?"
        ),
        _ => return None,
    })
}

fn blob(b: Option<&Vec<u8>>) -> MaybeUnset<CqlValue> {
    // An absent key or value is left unset, never a null (a tombstone).
    b.map_or(MaybeUnset::Unset, |b| set(CqlValue::Blob(b.clone())))
}

/// The writes of one letter: its row, and its listing under its tenant (when known)
/// and under [`PLATFORM`].
pub fn letter_writes(l: &Letter) -> Vec<Write> {
    // Microseconds, like every CQL write timestamp; the API's state writes (lightweight
    // transactions, stamped at their own time) always come later.
    let stamp = set(CqlValue::BigInt(l.at.timestamp_micros()));
    let tenant = l.tenant.as_ref().map(|t| text(t.as_str()));
    let headers = CqlValue::List(
        l.headers
            .iter()
            .map(|(k, v)| CqlValue::Tuple(vec![Some(text(k)), v.clone().map(CqlValue::Blob)]))
            .collect(),
    );
    let mut writes = vec![Write {
        table: Table::DeadLetters,
        values: vec![
            stamp.clone(),
            tenant.clone().map_or(MaybeUnset::Unset, set),
            set(ts(l.at)),
            set(text(&l.kind)),
            set(text(&l.stage)),
            set(text(&l.reason)),
            set(text(&l.topic)),
            l.partition
                .map_or(MaybeUnset::Unset, |p| set(CqlValue::Int(p))),
            l.offset
                .map_or(MaybeUnset::Unset, |o| set(CqlValue::BigInt(o))),
            blob(l.key.as_ref()),
            blob(l.value.as_ref()),
            set(headers),
            set(CqlValue::Uuid(l.id)),
        ],
    }];
    let listed_under = l
        .tenant
        .as_ref()
        .map(|t| t.as_str())
        .into_iter()
        .chain([PLATFORM]);
    for under in listed_under {
        writes.push(Write {
            table: Table::DeadLettersByDay,
            values: vec![
                stamp.clone(),
                tenant.clone().map_or(MaybeUnset::Unset, set),
                set(text(&l.kind)),
                set(text(&l.stage)),
                set(text(&l.reason)),
                set(text(&l.topic)),
                set(text(under)),
                set(day(l.at)),
                set(ts(l.at)),
                set(CqlValue::Uuid(l.id)),
            ],
        });
    }
    writes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn letter(tenant: Option<&str>) -> Letter {
        Letter {
            id: letter_id("aiq.dead-letters", 0, 7, 1_700_000_000_000),
            tenant: tenant.map(|t| TenantId::new(t).unwrap()),
            at: DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            kind: "unknown_workflow".into(),
            stage: "orchestrator".into(),
            reason: "workflow `x` is not registered".into(),
            topic: "aiq.triggers".into(),
            partition: Some(2),
            offset: Some(41),
            key: Some(b"acme".to_vec()),
            value: None,
            headers: vec![("traceparent".into(), Some(b"00-x".to_vec()))],
        }
    }

    #[test]
    fn ids_are_stable_and_tell_places_and_times_apart() {
        let a = letter_id("aiq.dead-letters", 0, 7, 1);
        assert_eq!(a, letter_id("aiq.dead-letters", 0, 7, 1));
        assert_ne!(a, letter_id("aiq.dead-letters", 1, 7, 1));
        assert_ne!(a, letter_id("aiq.dead-letters", 0, 8, 1));
        assert_ne!(a, letter_id("aiq.dead-letters", 0, 7, 2));
    }

    #[test]
    fn a_tenants_letter_is_listed_under_it_and_the_platform_an_unknown_one_only_there() {
        let under = |w: &[Write]| -> Vec<String> {
            w.iter()
                .filter(|w| w.table == Table::DeadLettersByDay)
                .map(|w| match &w.values[6] {
                    MaybeUnset::Set(CqlValue::Text(t)) => t.clone(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(under(&letter_writes(&letter(Some("acme")))), ["acme", "*"]);
        assert_eq!(under(&letter_writes(&letter(None))), ["*"]);
    }

    #[test]
    fn bind_markers_match_the_values() {
        let writes = letter_writes(&letter(Some("acme")));
        for w in &writes {
            let cql = cql(w.table, "ks").unwrap();
            assert_eq!(cql.matches('?').count(), w.values.len(), "{cql}");
        }
        // An absent value is unset, not a null that would tombstone a rewrite.
        assert!(matches!(writes[0].values[10], MaybeUnset::Unset));
    }
}
