//! Transactions: the [`Txn`] builder, and constructors for its compares and ops.
//!
//! ```
//! use ferrokv_client::txn::{self, CompareOp, Txn};
//! use ferrokv_client::TxnRequest;
//!
//! // Compare-and-set: if "k" still holds "old", write "new"; otherwise read it.
//! let txn = Txn::new()
//!     .when([txn::value("k", CompareOp::Equal, "old")])
//!     .and_then([txn::put("k", "new")])
//!     .or_else([txn::get("k")]);
//! let request = TxnRequest::from(txn);
//! assert_eq!((request.compares.len(), request.success.len()), (1, 1));
//! ```

use ferrokv_proto::v1::{
    Compare, DeleteRequest, GetRequest, PutRequest, TxnOp, TxnRequest, compare::Target, txn_op,
};

/// A transaction being built: compares, then the ops to run when every compare holds
/// (`and_then`), else the ops to run otherwise (`or_else`). Pass it to
/// [`Client::txn`](crate::Client::txn).
///
/// ```
/// use ferrokv_client::txn::{self, Txn};
///
/// // Create "lock" only if it does not exist yet.
/// let txn = Txn::new()
///     .when([txn::exists("lock", false)])
///     .and_then([txn::put("lock", "owner-1")]);
/// assert_eq!(txn.request().failure.len(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    request: TxnRequest,
}

impl Txn {
    /// An empty transaction: no compares (so the success ops run), no ops.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds compares; all of them must hold for the `and_then` ops to run.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.request.compares.extend(compares);
        self
    }

    /// Adds ops run when every compare holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.request.success.extend(ops);
        self
    }

    /// Adds ops run when a compare does not hold.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.request.failure.extend(ops);
        self
    }

    /// The wire request built so far.
    pub fn request(&self) -> &TxnRequest {
        &self.request
    }
}

impl From<Txn> for TxnRequest {
    fn from(txn: Txn) -> TxnRequest {
        txn.request
    }
}

pub use ferrokv_proto::v1::compare::Op as CompareOp;

fn compare(key: Vec<u8>, target: Target, op: CompareOp) -> Compare {
    Compare {
        key,
        target: target as i32,
        op: op as i32,
        ..Compare::default()
    }
}

/// Compares the key's value with `value` (a missing key has no value and fails every
/// value comparison, as in etcd — the server decides).
pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Compare {
    Compare {
        value: value.into(),
        ..compare(key.into(), Target::Value, op)
    }
}

/// Compares the key's version (writes since creation; 0 when it does not exist).
pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: u64) -> Compare {
    Compare {
        number: version,
        ..compare(key.into(), Target::Version, op)
    }
}

/// Compares the key's mod revision (log index of its last write; 0 when absent).
pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Compare {
    Compare {
        number: revision,
        ..compare(key.into(), Target::ModRevision, op)
    }
}

/// Compares the key's create revision (log index of the write that created it; 0 when
/// absent).
pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Compare {
    Compare {
        number: revision,
        ..compare(key.into(), Target::CreateRevision, op)
    }
}

/// Holds when the key exists (`exists == true`) or does not (`exists == false`).
pub fn exists(key: impl Into<Vec<u8>>, exists: bool) -> Compare {
    Compare {
        exists,
        ..compare(key.into(), Target::Exists, CompareOp::Equal)
    }
}

/// An op that writes `value` at `key`.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
            session: None,
        })),
    }
}

/// An op that deletes `key`.
pub fn delete(key: impl Into<Vec<u8>>) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Delete(DeleteRequest {
            key: key.into(),
            prev_kv: false,
            session: None,
        })),
    }
}

/// An op that reads `key` (at the transaction's revision).
pub fn get(key: impl Into<Vec<u8>>) -> TxnOp {
    TxnOp {
        op: Some(txn_op::Op::Get(GetRequest {
            key: key.into(),
            consistency: 0,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_carry_their_operand_in_the_right_field() {
        let c = value("k", CompareOp::NotEqual, "v");
        assert_eq!(
            (c.target, c.op),
            (Target::Value as i32, CompareOp::NotEqual as i32)
        );
        assert_eq!(c.value, b"v");

        let c = version("k", CompareOp::Greater, 3);
        assert_eq!((c.target, c.number), (Target::Version as i32, 3));

        let c = mod_revision("k", CompareOp::Less, 9);
        assert_eq!((c.target, c.number), (Target::ModRevision as i32, 9));

        let c = create_revision("k", CompareOp::Equal, 0);
        assert_eq!((c.target, c.number), (Target::CreateRevision as i32, 0));

        let c = exists("k", false);
        assert_eq!(
            (c.target, c.op, c.exists),
            (Target::Exists as i32, 0, false)
        );
    }

    #[test]
    fn builder_fills_the_three_lists_in_order() {
        let request = TxnRequest::from(
            Txn::new()
                .when([exists("a", true)])
                .when([version("a", CompareOp::Less, 3)])
                .and_then([put("a", "1"), delete("b")])
                .or_else([get("a")]),
        );
        assert_eq!(request.compares.len(), 2);
        assert_eq!(request.success.len(), 2);
        assert_eq!(request.failure, vec![get("a")]);
        assert_eq!(request.session, None);
    }

    #[test]
    fn ops_wrap_the_matching_request() {
        assert!(matches!(put("k", "v").op, Some(txn_op::Op::Put(p)) if p.value == b"v"));
        assert!(matches!(delete("k").op, Some(txn_op::Op::Delete(d)) if d.key == b"k"));
        assert!(matches!(get("k").op, Some(txn_op::Op::Get(g)) if g.key == b"k"));
    }
}
