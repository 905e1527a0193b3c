//! The headers of a dead-letter record, the same from every stage: the original
//! record's headers as they were, then where it came from and why it was set aside
//! (see `aiq_topics::dead_letter`).

use aiq_topics::DeadLetterKind;
use aiq_topics::dead_letter::headers;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Where a dead-lettered record was read, and why it failed.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterOrigin<'a> {
    pub kind: DeadLetterKind,
    /// A sentence naming the field and the reason.
    pub reason: &'a str,
    /// The stage that set the record aside (`orchestrator`, `worker`, `sink`).
    pub stage: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

const OURS: usize = 6;

impl DeadLetterOrigin<'_> {
    /// The dead-letter headers alone, for a record whose headers are not at hand.
    pub fn headers(&self) -> OwnedHeaders {
        self.append_to(OwnedHeaders::new_with_capacity(OURS))
    }

    /// The original record's headers, in order and as they were (a header without a
    /// value stays without one), followed by the dead-letter headers. Should the
    /// original already carry a dead-letter header (a record dead-lettered twice), both
    /// are kept and the last one of a name is this stage's.
    pub fn headers_after<H: Headers>(&self, original: &H) -> OwnedHeaders {
        let mut all = OwnedHeaders::new_with_capacity(original.count() + OURS);
        for h in original.iter() {
            all = all.insert(h);
        }
        self.append_to(all)
    }

    fn append_to(&self, to: OwnedHeaders) -> OwnedHeaders {
        to.insert(header(headers::KIND, self.kind.as_str()))
            .insert(header(headers::REASON, self.reason))
            .insert(header(headers::STAGE, self.stage))
            .insert(header(headers::TOPIC, self.topic))
            .insert(header(headers::PARTITION, &self.partition.to_string()))
            .insert(header(headers::OFFSET, &self.offset.to_string()))
    }
}

/// A dead-letter record's headers read back: the original record's headers (every
/// `aiq-dlq-*` header taken out, so that a replay carries what the record first had)
/// and where and why it was set aside (the last header of each name: the stage that set
/// it aside last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOrigin {
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub stage: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// In order; a header without a value stays without one.
    pub original: Vec<(String, Option<Vec<u8>>)>,
}

/// Splits a dead-letter record's headers into its origin and the original headers.
pub fn read_origin<H: Headers>(all: &H) -> ReadOrigin {
    let mut out = ReadOrigin::default();
    for h in all.iter() {
        if !h.key.starts_with(headers::PREFIX) {
            out.original
                .push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
            continue;
        }
        let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
        match h.key {
            headers::KIND => out.kind = text,
            headers::REASON => out.reason = text,
            headers::STAGE => out.stage = text,
            headers::TOPIC => out.topic = text,
            headers::PARTITION => out.partition = text.and_then(|t| t.parse().ok()),
            headers::OFFSET => out.offset = text.and_then(|t| t.parse().ok()),
            _ => {}
        }
    }
    out
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pairs(h: &OwnedHeaders) -> Vec<(String, Option<String>)> {
        h.iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    h.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect()
    }

    fn origin() -> DeadLetterOrigin<'static> {
        DeadLetterOrigin {
            kind: DeadLetterKind::Undecodable,
            reason: "task is not valid: expected value at line 1 column 1",
            stage: "worker",
            topic: "aiq.tasks",
            partition: 3,
            offset: 1234,
        }
    }

    fn ours() -> Vec<(String, Option<String>)> {
        [
            (headers::KIND, "undecodable"),
            (
                headers::REASON,
                "task is not valid: expected value at line 1 column 1",
            ),
            (headers::STAGE, "worker"),
            (headers::TOPIC, "aiq.tasks"),
            (headers::PARTITION, "3"),
            (headers::OFFSET, "1234"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect()
    }

    #[test]
    fn alone_they_say_kind_reason_stage_topic_partition_and_offset_in_that_order() {
        assert_eq!(pairs(&origin().headers()), ours());
    }

    #[test]
    fn the_original_headers_come_first_as_they_were() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-abc-01".as_bytes()),
            })
            .insert(Header::<&[u8]> {
                key: "empty",
                value: None,
            })
            .insert(Header {
                key: "traceparent",
                value: Some("second".as_bytes()),
            });
        let mut want = vec![
            ("traceparent".to_owned(), Some("00-abc-01".to_owned())),
            ("empty".to_owned(), None),
            ("traceparent".to_owned(), Some("second".to_owned())),
        ];
        want.extend(ours());
        assert_eq!(pairs(&origin().headers_after(&original)), want);
        let read = read_origin(&origin().headers_after(&original));
        assert_eq!(read.kind.as_deref(), Some("undecodable"));
        assert_eq!(read.stage.as_deref(), Some("worker"));
        assert_eq!(read.topic.as_deref(), Some("aiq.tasks"));
        assert_eq!((read.partition, read.offset), (Some(3), Some(1234)));
        assert_eq!(
            read.original,
            vec![
                ("traceparent".to_owned(), Some(b"00-abc-01".to_vec())),
                ("empty".to_owned(), None),
                ("traceparent".to_owned(), Some(b"second".to_vec())),
            ]
        );
        assert_eq!(pairs(&origin().headers_after(&OwnedHeaders::new())), ours());
    }
}
