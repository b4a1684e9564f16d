//! Per-request options and the scan range, and their mapping onto wire requests.

use ferrokv_proto::v1::{Consistency, ScanRequest};

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// `false` (the default): linearizable — the read sees every write acknowledged
    /// before it began (the replica confirms its read index with the leader).
    /// `true`: serializable — the answering replica's applied state, possibly stale,
    /// served without a leader; useful for debugging a cluster that has none.
    pub serializable: bool,
}

impl ReadOptions {
    /// A serializable read (see [`ReadOptions::serializable`]).
    pub fn serializable() -> ReadOptions {
        ReadOptions { serializable: true }
    }

    pub(crate) fn consistency(self) -> Consistency {
        if self.serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        }
    }
}

/// Options of a put.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Return the key's previous value (if any) in
    /// [`PutResponse::prev_kv`](crate::PutResponse::prev_kv).
    pub prev_kv: bool,
}

/// Which keys a scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanRange {
    /// Keys in `[start, end)`; an empty `end` means "to the last key", an empty `start`
    /// "from the first key".
    Range {
        /// First key, inclusive.
        start: Vec<u8>,
        /// Last key, exclusive; empty for no upper bound.
        end: Vec<u8>,
    },
    /// Exactly the keys that start with this prefix.
    Prefix(Vec<u8>),
}

impl ScanRange {
    /// Keys in `[start, end)` (an empty `end` means no upper bound).
    pub fn range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> ScanRange {
        ScanRange::Range {
            start: start.into(),
            end: end.into(),
        }
    }

    /// The keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> ScanRange {
        ScanRange::Prefix(prefix.into())
    }

    /// Every key.
    pub fn all() -> ScanRange {
        ScanRange::range(Vec::new(), Vec::new())
    }
}

/// How one scan page is asked for; see [`Client::scan_page`](crate::Client::scan_page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// At most this many keys per page; 0 means the server's default page size.
    pub limit: u32,
    /// Return keys with their revisions only, no values.
    pub keys_only: bool,
    /// `next_token` of the previous page: resume after its last key. Empty for the
    /// first page.
    pub continuation: Vec<u8>,
    /// Consistency of the read.
    pub read: ReadOptions,
}

/// Builds the wire request for one page.
pub(crate) fn scan_request(range: &ScanRange, options: &ScanOptions) -> ScanRequest {
    let (start, end, prefix) = match range {
        ScanRange::Range { start, end } => (start.clone(), end.clone(), Vec::new()),
        ScanRange::Prefix(prefix) => (Vec::new(), Vec::new(), prefix.clone()),
    };
    ScanRequest {
        start,
        end,
        prefix,
        limit: options.limit,
        continuation: options.continuation.clone(),
        consistency: options.read.consistency() as i32,
        keys_only: options.keys_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_scan_leaves_start_and_end_empty() {
        let options = ScanOptions {
            limit: 10,
            keys_only: true,
            continuation: b"tok".to_vec(),
            read: ReadOptions::serializable(),
        };
        let req = scan_request(&ScanRange::prefix("a/"), &options);
        assert_eq!(req.prefix, b"a/");
        assert!(req.start.is_empty() && req.end.is_empty());
        assert_eq!(req.limit, 10);
        assert!(req.keys_only);
        assert_eq!(req.continuation, b"tok");
        assert_eq!(req.consistency, Consistency::Serializable as i32);
    }

    #[test]
    fn range_scan_is_linearizable_by_default() {
        let req = scan_request(&ScanRange::range("a", "b"), &ScanOptions::default());
        assert_eq!(
            (req.start.as_slice(), req.end.as_slice()),
            (&b"a"[..], &b"b"[..])
        );
        assert!(req.prefix.is_empty());
        assert_eq!(req.consistency, Consistency::Linearizable as i32);
    }
}
