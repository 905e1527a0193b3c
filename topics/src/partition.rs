//! The partitioner every producer of tenant-keyed topics must agree on.
//!
//! The orchestrator owns a tenant only if the tenant's triggers, results, signals and
//! changelog land in the same partition number. Java clients partition keyed records by
//! murmur2; librdkafka's default (`consistent_random`, CRC32) does not agree with it, so
//! every AutomateIQ producer sets `partitioner=murmur2_random` and external producers are
//! told to do the same. This function is that partitioner, for code that must know a
//! key's partition without producing (routing checks, tests).

/// Kafka's murmur2 as in `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default Java partitioner (and librdkafka's `murmur2_random`)
/// chooses for a non-empty key among `partitions` partitions.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_client_reference_values() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn partition_is_in_range_and_stable(key in proptest::collection::vec(proptest::num::u8::ANY, 1..64), n in 1u32..512) {
            let p = partition_for_key(&key, n);
            proptest::prop_assert!(p < n);
            proptest::prop_assert_eq!(p, partition_for_key(&key, n));
        }
    }
}
