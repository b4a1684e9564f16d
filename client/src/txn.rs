//! Constructors for the parts of a [`TxnRequest`](crate::TxnRequest): compares and ops.
//!
//! ```
//! use ferrokv_client::txn::{self, CompareOp};
//! use ferrokv_client::TxnRequest;
//!
//! // Compare-and-set: if "k" still holds "old", write "new"; otherwise read it.
//! let request = TxnRequest {
//!     compares: vec![txn::value("k", CompareOp::Equal, "old")],
//!     success: vec![txn::put("k", "new")],
//!     failure: vec![txn::get("k")],
//! };
//! assert_eq!(request.success.len(), 1);
//! ```

use ferrokv_proto::v1::{
    Compare, DeleteRequest, GetRequest, PutRequest, TxnOp, compare::Target, txn_op,
};

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
    fn ops_wrap_the_matching_request() {
        assert!(matches!(put("k", "v").op, Some(txn_op::Op::Put(p)) if p.value == b"v"));
        assert!(matches!(delete("k").op, Some(txn_op::Op::Delete(d)) if d.key == b"k"));
        assert!(matches!(get("k").op, Some(txn_op::Op::Get(g)) if g.key == b"k"));
    }
}
