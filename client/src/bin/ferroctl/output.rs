//! How ferroctl prints results in each `--write-out` mode. Every function renders to
//! bytes (simple mode writes keys and values raw), so formatting is tested without a
//! terminal.

use comfy_table::Table;
use serde_json::{Value, json};

use ferrokv_client::proto::txn_op_result;
use ferrokv_client::{
    DeleteResponse, EndpointStatus, Error, KeyValue, Member, MemberListResponse, PutResponse,
    ResponseHeader, StatusResponse, TransferLeaderResponse, TxnResponse,
};

use crate::cli::WriteOut;

/// Text for people: invalid UTF-8 replaced.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `key` then `value` lines, raw (keys only: just the key line).
fn kv_lines(out: &mut Vec<u8>, kv: &KeyValue, keys_only: bool) {
    out.extend_from_slice(&kv.key);
    out.push(b'\n');
    if !keys_only {
        out.extend_from_slice(&kv.value);
        out.push(b'\n');
    }
}

fn kv_json(kv: &KeyValue, keys_only: bool) -> Value {
    let mut object = json!({
        "key": text(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    if !keys_only {
        object["value"] = Value::String(text(&kv.value));
    }
    object
}

fn header_json(header: Option<&ResponseHeader>) -> Value {
    let header = header.cloned().unwrap_or_default();
    json!({
        "cluster_id": header.cluster_id,
        "member_id": header.member_id,
        "leader_id": header.leader_id,
        "raft_term": header.raft_term,
        "revision": header.revision,
    })
}

fn json_line(value: &Value) -> Vec<u8> {
    // Serializing a Value cannot fail; the fallback only keeps this free of panics.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"null".to_vec());
    out.push(b'\n');
    out
}

fn table_text(table: &Table) -> Vec<u8> {
    format!("{table}\n").into_bytes()
}

fn kvs_table(kvs: &[KeyValue], keys_only: bool) -> Table {
    let mut table = Table::new();
    let mut header = vec!["KEY"];
    if !keys_only {
        header.push("VALUE");
    }
    header.extend(["CREATE REV", "MOD REV", "VERSION"]);
    table.set_header(header);
    for kv in kvs {
        let mut row = vec![text(&kv.key)];
        if !keys_only {
            row.push(text(&kv.value));
        }
        row.extend([
            kv.create_revision.to_string(),
            kv.mod_revision.to_string(),
            kv.version.to_string(),
        ]);
        table.add_row(row);
    }
    table
}

/// `get`: the value and a newline (simple), the key as JSON, or a one-row table.
pub fn get(kv: &KeyValue, mode: WriteOut) -> Vec<u8> {
    match mode {
        WriteOut::Simple => {
            let mut out = kv.value.clone();
            out.push(b'\n');
            out
        }
        WriteOut::Json => json_line(&kv_json(kv, false)),
        WriteOut::Table => table_text(&kvs_table(std::slice::from_ref(kv), false)),
    }
}

/// `scan`: key and value lines per key, a table, or a JSON array.
pub fn scan(kvs: &[KeyValue], keys_only: bool, mode: WriteOut) -> Vec<u8> {
    match mode {
        WriteOut::Simple => {
            let mut out = Vec::new();
            for kv in kvs {
                kv_lines(&mut out, kv, keys_only);
            }
            out
        }
        WriteOut::Json => json_line(&Value::Array(
            kvs.iter().map(|kv| kv_json(kv, keys_only)).collect(),
        )),
        WriteOut::Table => table_text(&kvs_table(kvs, keys_only)),
    }
}

/// `put`: OK, then the previous key when asked for and there was one.
pub fn put(response: &PutResponse, mode: WriteOut) -> Vec<u8> {
    let prev = response.prev_kv.as_ref();
    match mode {
        WriteOut::Simple => {
            let mut out = b"OK\n".to_vec();
            if let Some(kv) = prev {
                kv_lines(&mut out, kv, false);
            }
            out
        }
        WriteOut::Json => json_line(&json!({
            "header": header_json(response.header.as_ref()),
            "prev_kv": prev.map(|kv| kv_json(kv, false)),
        })),
        WriteOut::Table => {
            let mut out = b"OK\n".to_vec();
            if let Some(kv) = prev {
                out.extend(table_text(&kvs_table(std::slice::from_ref(kv), false)));
            }
            out
        }
    }
}

/// `del`: the number deleted, then the deleted key when asked for.
pub fn delete(response: &DeleteResponse, mode: WriteOut) -> Vec<u8> {
    let prev = response.prev_kv.as_ref();
    match mode {
        WriteOut::Json => json_line(&json!({
            "header": header_json(response.header.as_ref()),
            "deleted": response.deleted,
            "prev_kv": prev.map(|kv| kv_json(kv, false)),
        })),
        WriteOut::Simple | WriteOut::Table => {
            let mut out = format!("{}\n", response.deleted).into_bytes();
            if let Some(kv) = prev {
                if mode == WriteOut::Table {
                    out.extend(table_text(&kvs_table(std::slice::from_ref(kv), false)));
                } else {
                    kv_lines(&mut out, kv, false);
                }
            }
            out
        }
    }
}

/// `txn`: SUCCESS or FAILURE, then each op's result after a blank line (simple: OK for
/// a put, the count for a del, key and value lines for a get that found its key).
pub fn txn(response: &TxnResponse, mode: WriteOut) -> Vec<u8> {
    let verdict = if response.succeeded {
        "SUCCESS"
    } else {
        "FAILURE"
    };
    let results = response.results.iter().map(|r| r.result.as_ref());
    match mode {
        WriteOut::Simple => {
            let mut out = format!("{verdict}\n").into_bytes();
            for result in results {
                out.push(b'\n');
                match result {
                    Some(txn_op_result::Result::Put(_)) => out.extend_from_slice(b"OK\n"),
                    Some(txn_op_result::Result::Delete(d)) => {
                        out.extend(format!("{}\n", d.deleted).into_bytes());
                    }
                    Some(txn_op_result::Result::Get(g)) => {
                        if let Some(kv) = &g.kv {
                            kv_lines(&mut out, kv, false);
                        }
                    }
                    None => {}
                }
            }
            out
        }
        WriteOut::Json => {
            let results: Vec<Value> = results
                .map(|result| match result {
                    Some(txn_op_result::Result::Put(p)) => json!({
                        "put": { "prev_kv": p.prev_kv.as_ref().map(|kv| kv_json(kv, false)) }
                    }),
                    Some(txn_op_result::Result::Delete(d)) => json!({
                        "delete": { "deleted": d.deleted }
                    }),
                    Some(txn_op_result::Result::Get(g)) => json!({
                        "get": { "kv": g.kv.as_ref().map(|kv| kv_json(kv, false)) }
                    }),
                    None => Value::Null,
                })
                .collect();
            json_line(&json!({
                "header": header_json(response.header.as_ref()),
                "succeeded": response.succeeded,
                "results": results,
            }))
        }
        WriteOut::Table => {
            let mut table = Table::new();
            table.set_header(vec!["#", "OP", "RESULT"]);
            for (index, result) in results.enumerate() {
                let (op, outcome) = match result {
                    Some(txn_op_result::Result::Put(_)) => ("put", "OK".to_string()),
                    Some(txn_op_result::Result::Delete(d)) => ("del", d.deleted.to_string()),
                    Some(txn_op_result::Result::Get(g)) => (
                        "get",
                        g.kv.as_ref().map_or("(not found)".to_string(), |kv| {
                            format!("{} = {}", text(&kv.key), text(&kv.value))
                        }),
                    ),
                    None => ("?", String::new()),
                };
                table.add_row(vec![(index + 1).to_string(), op.to_string(), outcome]);
            }
            let mut out = format!("{verdict}\n").into_bytes();
            out.extend(table_text(&table));
            out
        }
    }
}

/// `member list`.
pub fn members(response: &MemberListResponse, mode: WriteOut) -> Vec<u8> {
    match mode {
        WriteOut::Simple => {
            let mut out = String::new();
            for m in &response.members {
                out.push_str(&format!(
                    "{}, {}, {}, {}, {}\n",
                    m.id, m.name, m.peer_addr, m.client_addr, m.is_learner
                ));
            }
            out.into_bytes()
        }
        WriteOut::Json => json_line(&json!({
            "header": header_json(response.header.as_ref()),
            "members": response.members.iter().map(|m| json!({
                "id": m.id,
                "name": m.name,
                "peer_addr": m.peer_addr,
                "client_addr": m.client_addr,
                "is_learner": m.is_learner,
            })).collect::<Vec<_>>(),
        })),
        WriteOut::Table => {
            let mut table = Table::new();
            table.set_header(vec!["ID", "NAME", "PEER ADDR", "CLIENT ADDR", "LEARNER"]);
            for m in &response.members {
                table.add_row(vec![
                    m.id.to_string(),
                    m.name.clone(),
                    m.peer_addr.clone(),
                    m.client_addr.clone(),
                    m.is_learner.to_string(),
                ]);
            }
            table_text(&table)
        }
    }
}

/// `member add|promote|remove`: what changed, then the members after the change.
pub fn member_change(
    action: &str,
    id: u64,
    header: Option<&ResponseHeader>,
    members: &[Member],
    mode: WriteOut,
) -> Vec<u8> {
    let list = MemberListResponse {
        header: header.cloned(),
        members: members.to_vec(),
    };
    match mode {
        WriteOut::Simple | WriteOut::Table => {
            let mut out = format!("Member {id} {action}\n").into_bytes();
            out.extend(self::members(&list, mode));
            out
        }
        WriteOut::Json => {
            let mut value: Value =
                serde_json::from_slice(&self::members(&list, mode)).unwrap_or(Value::Null);
            value["action"] = Value::String(action.to_string());
            value["id"] = json!(id);
            json_line(&value)
        }
    }
}

/// `leader transfer`.
pub fn leader_transfer(response: &TransferLeaderResponse, mode: WriteOut) -> Vec<u8> {
    match mode {
        WriteOut::Simple => {
            format!("Leadership transferred to member {}\n", response.leader_id).into_bytes()
        }
        WriteOut::Json => json_line(&json!({
            "header": header_json(response.header.as_ref()),
            "leader_id": response.leader_id,
        })),
        WriteOut::Table => {
            let mut table = Table::new();
            table.set_header(vec!["LEADER", "TERM"]);
            let term = response.header.as_ref().map_or(0, |h| h.raft_term);
            table.add_row(vec![response.leader_id.to_string(), term.to_string()]);
            table_text(&table)
        }
    }
}

/// `1.5 MiB`: sizes in binary units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One endpoint status as table cells, in the order of [`STATUS_COLUMNS`].
fn status_cells(s: &StatusResponse) -> Vec<String> {
    vec![
        s.id.to_string(),
        s.name.clone(),
        s.role.clone(),
        s.leader_id.to_string(),
        s.term.to_string(),
        s.commit_index.to_string(),
        s.applied_index.to_string(),
        s.last_log_index.to_string(),
        s.snapshot_index.to_string(),
        human_bytes(s.db_size_bytes),
        s.key_count.to_string(),
    ]
}

const STATUS_COLUMNS: [&str; 12] = [
    "ENDPOINT", "ID", "NAME", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "LAST LOG",
    "SNAPSHOT", "DB SIZE", "KEYS",
];

fn status_json(s: &StatusResponse) -> Value {
    json!({
        "header": header_json(s.header.as_ref()),
        "id": s.id,
        "name": s.name,
        "peer_addr": s.peer_addr,
        "client_addr": s.client_addr,
        "role": s.role,
        "leader_id": s.leader_id,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_log_index": s.last_log_index,
        "snapshot_index": s.snapshot_index,
        "db_size_bytes": s.db_size_bytes,
        "version": s.version,
        "key_count": s.key_count,
    })
}

/// `endpoint status`: one row per endpoint; a failed endpoint shows its error.
pub fn statuses(statuses: &[EndpointStatus], mode: WriteOut) -> Vec<u8> {
    match mode {
        WriteOut::Simple => {
            let mut out = String::new();
            for entry in statuses {
                let rest = match &entry.status {
                    Ok(s) => status_cells(s).join(", "),
                    Err(err) => format!("error: {err}"),
                };
                out.push_str(&format!("{}, {rest}\n", entry.endpoint));
            }
            out.into_bytes()
        }
        WriteOut::Json => json_line(&Value::Array(
            statuses
                .iter()
                .map(|entry| match &entry.status {
                    Ok(s) => json!({ "endpoint": entry.endpoint, "status": status_json(s) }),
                    Err(err) => json!({ "endpoint": entry.endpoint, "error": err.to_string() }),
                })
                .collect(),
        )),
        WriteOut::Table => {
            let any_failed = statuses.iter().any(|entry| entry.status.is_err());
            let mut header: Vec<&str> = STATUS_COLUMNS.to_vec();
            if any_failed {
                header.push("ERROR");
            }
            let mut table = Table::new();
            table.set_header(header);
            for entry in statuses {
                let mut row = vec![entry.endpoint.clone()];
                match &entry.status {
                    Ok(s) => {
                        row.extend(status_cells(s));
                        if any_failed {
                            row.push(String::new());
                        }
                    }
                    Err(err) => {
                        row.extend(std::iter::repeat_n(String::new(), STATUS_COLUMNS.len() - 1));
                        row.push(err.to_string());
                    }
                }
                table.add_row(row);
            }
            table_text(&table)
        }
    }
}

/// Whether an endpoint is healthy: it answered Status and knows a leader. `Err` says
/// why not.
pub fn health(status: &Result<StatusResponse, Error>) -> Result<u64, String> {
    match status {
        Ok(s) if s.leader_id != 0 => Ok(s.leader_id),
        Ok(_) => Err("no leader known".to_string()),
        Err(err) => Err(err.to_string()),
    }
}

/// `endpoint health`: one line (or row) per endpoint.
pub fn healths(statuses: &[EndpointStatus], mode: WriteOut) -> Vec<u8> {
    let verdicts: Vec<(&str, Result<u64, String>)> = statuses
        .iter()
        .map(|entry| (entry.endpoint.as_str(), health(&entry.status)))
        .collect();
    match mode {
        WriteOut::Simple => {
            let mut out = String::new();
            for (endpoint, verdict) in &verdicts {
                match verdict {
                    Ok(leader) => {
                        out.push_str(&format!("{endpoint} is healthy: leader {leader}\n"))
                    }
                    Err(why) => out.push_str(&format!("{endpoint} is unhealthy: {why}\n")),
                }
            }
            out.into_bytes()
        }
        WriteOut::Json => json_line(&Value::Array(
            verdicts
                .iter()
                .map(|(endpoint, verdict)| match verdict {
                    Ok(leader) => {
                        json!({ "endpoint": endpoint, "health": true, "leader_id": leader })
                    }
                    Err(why) => json!({ "endpoint": endpoint, "health": false, "error": why }),
                })
                .collect(),
        )),
        WriteOut::Table => {
            let mut table = Table::new();
            table.set_header(vec!["ENDPOINT", "HEALTH", "LEADER", "ERROR"]);
            for (endpoint, verdict) in &verdicts {
                let row = match verdict {
                    Ok(leader) => vec![
                        endpoint.to_string(),
                        "true".into(),
                        leader.to_string(),
                        String::new(),
                    ],
                    Err(why) => vec![
                        endpoint.to_string(),
                        "false".into(),
                        String::new(),
                        why.clone(),
                    ],
                };
                table.add_row(row);
            }
            table_text(&table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> KeyValue {
        KeyValue {
            key: b"greeting".to_vec(),
            value: b"hello\xff".to_vec(),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
        }
    }

    #[test]
    fn get_simple_prints_the_raw_value_and_a_newline() {
        assert_eq!(get(&kv(), WriteOut::Simple), b"hello\xff\n");
    }

    #[test]
    fn get_json_has_the_key_fields_with_lossy_utf8() {
        let value: Value = serde_json::from_slice(&get(&kv(), WriteOut::Json)).expect("json");
        assert_eq!(
            value,
            json!({
                "key": "greeting",
                "value": "hello\u{fffd}",
                "create_revision": 3,
                "mod_revision": 7,
                "version": 2,
            })
        );
    }

    #[test]
    fn get_table_shows_one_row() {
        let out = String::from_utf8(get(&kv(), WriteOut::Table)).expect("utf8");
        for cell in ["KEY", "VALUE", "MOD REV", "greeting", "hello\u{fffd}", "7"] {
            assert!(out.contains(cell), "{cell} missing from\n{out}");
        }
    }

    #[test]
    fn scan_simple_alternates_key_and_value_lines() {
        let mut second = kv();
        second.key = b"k2".to_vec();
        second.value = b"v2".to_vec();
        let kvs = [kv(), second];
        assert_eq!(
            scan(&kvs, false, WriteOut::Simple),
            b"greeting\nhello\xff\nk2\nv2\n"
        );
        assert_eq!(scan(&kvs, true, WriteOut::Simple), b"greeting\nk2\n");
    }

    #[test]
    fn scan_json_is_an_array_and_keys_only_drops_values() {
        let value: Value =
            serde_json::from_slice(&scan(&[kv()], true, WriteOut::Json)).expect("json");
        assert_eq!(value.as_array().map(Vec::len), Some(1));
        assert_eq!(value[0]["key"], "greeting");
        assert!(value[0].get("value").is_none());
    }

    #[test]
    fn scan_table_keys_only_has_no_value_column() {
        let out = String::from_utf8(scan(&[kv()], true, WriteOut::Table)).expect("utf8");
        assert!(out.contains("KEY") && !out.contains("VALUE"), "{out}");
    }

    #[test]
    fn put_prints_ok_and_the_previous_key() {
        let response = PutResponse {
            header: None,
            prev_kv: Some(kv()),
        };
        assert_eq!(
            put(&response, WriteOut::Simple),
            b"OK\ngreeting\nhello\xff\n"
        );
        assert_eq!(put(&PutResponse::default(), WriteOut::Simple), b"OK\n");
    }

    #[test]
    fn delete_prints_the_count() {
        let response = DeleteResponse {
            deleted: 1,
            ..DeleteResponse::default()
        };
        assert_eq!(delete(&response, WriteOut::Simple), b"1\n");
        let value: Value =
            serde_json::from_slice(&delete(&response, WriteOut::Json)).expect("json");
        assert_eq!(value["deleted"], 1);
    }

    #[test]
    fn txn_simple_prints_verdict_then_each_result() {
        use ferrokv_client::TxnOpResult;
        use ferrokv_client::proto::GetResponse;
        let result = |r| TxnOpResult { result: Some(r) };
        let response = TxnResponse {
            header: None,
            succeeded: false,
            results: vec![
                result(txn_op_result::Result::Put(PutResponse::default())),
                result(txn_op_result::Result::Delete(DeleteResponse {
                    deleted: 0,
                    ..DeleteResponse::default()
                })),
                result(txn_op_result::Result::Get(GetResponse {
                    header: None,
                    kv: Some(kv()),
                })),
            ],
        };
        assert_eq!(
            txn(&response, WriteOut::Simple),
            b"FAILURE\n\nOK\n\n0\n\ngreeting\nhello\xff\n"
        );
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn health_needs_an_answer_and_a_leader() {
        let with_leader = StatusResponse {
            leader_id: 2,
            ..StatusResponse::default()
        };
        assert_eq!(health(&Ok(with_leader)), Ok(2));
        assert_eq!(
            health(&Ok(StatusResponse::default())),
            Err("no leader known".into())
        );
        assert!(health(&Err(Error::NoEndpoints)).is_err());
    }

    #[test]
    fn status_table_shows_errors_in_their_row() {
        let entries = [
            EndpointStatus {
                endpoint: "a:1".into(),
                status: Ok(StatusResponse {
                    id: 1,
                    role: "leader".into(),
                    db_size_bytes: 2048,
                    ..StatusResponse::default()
                }),
            },
            EndpointStatus {
                endpoint: "b:2".into(),
                status: Err(Error::Transport {
                    endpoint: "b:2".into(),
                    message: "connection refused".into(),
                }),
            },
        ];
        let out = String::from_utf8(statuses(&entries, WriteOut::Table)).expect("utf8");
        for cell in ["ERROR", "leader", "2.0 KiB", "connection refused"] {
            assert!(out.contains(cell), "{cell} missing from\n{out}");
        }
        let simple = String::from_utf8(statuses(&entries, WriteOut::Simple)).expect("utf8");
        assert!(simple.starts_with("a:1, 1, , leader,"), "{simple}");
        assert!(simple.contains("b:2, error: cannot reach b:2"), "{simple}");
    }
}
