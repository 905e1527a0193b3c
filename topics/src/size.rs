//! How big a record will be, measured without building it.

use serde::Serialize;

/// The length of `v` as compact JSON, counted by serialising into a counter rather than a
/// buffer, so that checking a record against a size limit costs no copy of it.
pub fn json_size<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing plain data into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_serde_json_writes() {
        let v = serde_json::json!({"a": [1, 2, "x"], "b": null, "c": "é"});
        assert_eq!(json_size(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
