//! Parses the etcdctl-like transaction text `ferroctl txn` reads from standard input.
//!
//! ```text
//! value("k") = "v"        <- compares, one per line
//! version("n") > 3
//!                         <- blank line
//! put k "new value"       <- success ops
//! get n
//!                         <- blank line
//! get k                   <- failure ops
//! ```
//!
//! Each blank line ends a section, so two blank lines in a row leave the middle section
//! empty; a text that ends early leaves the remaining sections empty. Lines whose first
//! non-blank character is `#` are comments.

use std::fmt;

use ferrokv_client::txn::{self, CompareOp};
use ferrokv_client::{Compare, TxnOp, TxnRequest};

/// A mistake in the transaction text, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole transaction text.
pub fn parse_txn(text: &str) -> Result<TxnRequest, ParseError> {
    let mut request = TxnRequest::default();
    let mut section = 0;
    for (index, line) in text.lines().enumerate() {
        let at = |message: String| ParseError {
            line: index + 1,
            message,
        };
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            section += 1;
            continue;
        }
        match section {
            0 => request.compares.push(parse_compare(line).map_err(at)?),
            1 => request.success.push(parse_op(line).map_err(at)?),
            2 => request.failure.push(parse_op(line).map_err(at)?),
            _ => {
                return Err(at(
                    "text after the failure ops (a txn has three sections: compares, \
                     success ops, failure ops)"
                        .to_string(),
                ));
            }
        }
    }
    Ok(request)
}

/// How many blank lines a complete transaction has: after it, a reader may stop.
pub const SECTIONS: usize = 3;

/// Parses one compare: `target("key") op operand`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let mut cursor = Cursor::new(line);
    let target = cursor.word(|c| c == '(' || c.is_whitespace());
    cursor.skip_whitespace();
    if !cursor.eat('(') {
        return Err(format!("expected ( after {target:?} in {line:?}"));
    }
    cursor.skip_whitespace();
    let key = if cursor.peek() == Some('"') {
        cursor.quoted()?
    } else {
        cursor.word(|c| c == ')' || c.is_whitespace()).into_bytes()
    };
    cursor.skip_whitespace();
    if !cursor.eat(')') {
        return Err(format!("expected ) after the key in {line:?}"));
    }
    cursor.skip_whitespace();
    let op = cursor.operator()?;
    cursor.skip_whitespace();
    let operand = cursor.token()?;
    cursor.skip_whitespace();
    if !cursor.at_end() {
        return Err(format!("unexpected text after the operand in {line:?}"));
    }
    let number = || -> Result<u64, String> {
        let text = String::from_utf8_lossy(&operand);
        text.parse()
            .map_err(|_| format!("{target} compares with a number, not {text:?}"))
    };
    match target.as_str() {
        "value" | "val" => Ok(txn::value(key, op, operand)),
        "version" | "ver" => Ok(txn::version(key, op, number()?)),
        "mod" | "mod_revision" => Ok(txn::mod_revision(key, op, number()?)),
        "create" | "create_revision" => Ok(txn::create_revision(key, op, number()?)),
        "exists" => {
            let exists = match operand.as_slice() {
                b"true" => true,
                b"false" => false,
                _ => return Err("exists compares with true or false".to_string()),
            };
            match op {
                CompareOp::Equal => Ok(txn::exists(key, exists)),
                CompareOp::NotEqual => Ok(txn::exists(key, !exists)),
                _ => Err("exists takes = or != only".to_string()),
            }
        }
        other => Err(format!(
            "unknown compare target {other:?} (value, version, mod, create, exists)"
        )),
    }
}

/// Parses one op: `put KEY VALUE`, `del KEY` or `get KEY`.
pub fn parse_op(line: &str) -> Result<TxnOp, String> {
    let mut cursor = Cursor::new(line);
    let mut tokens = Vec::new();
    loop {
        cursor.skip_whitespace();
        if cursor.at_end() {
            break;
        }
        tokens.push(cursor.token()?);
    }
    let (command, args) = tokens.split_first().ok_or("empty op")?;
    let arity = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("usage: {usage} (in {line:?})"))
        }
    };
    match command.as_slice() {
        b"put" => {
            arity(2, "put KEY VALUE")?;
            Ok(txn::put(args[0].clone(), args[1].clone()))
        }
        b"del" | b"delete" => {
            arity(1, "del KEY")?;
            Ok(txn::delete(args[0].clone()))
        }
        b"get" => {
            arity(1, "get KEY")?;
            Ok(txn::get(args[0].clone()))
        }
        other => Err(format!(
            "unknown op {:?} (put, del, get)",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Reads a line left to right.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Cursor<'a> {
        Cursor { rest: line }
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Everything up to the first character for which `stop` holds.
    fn word(&mut self, stop: impl Fn(char) -> bool) -> String {
        let end = self.rest.find(stop).unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word.to_string()
    }

    /// A quoted string or a bare word (which ends at whitespace and holds no quote).
    fn token(&mut self) -> Result<Vec<u8>, String> {
        let token = if self.peek() == Some('"') {
            self.quoted()?
        } else {
            let word = self.word(|c| c.is_whitespace() || c == '"');
            if word.is_empty() {
                return Err("expected a word or a \"quoted string\"".to_string());
            }
            word.into_bytes()
        };
        match self.peek() {
            None => Ok(token),
            Some(c) if c.is_whitespace() => Ok(token),
            Some(_) => Err("a quoted string must be followed by a space".to_string()),
        }
    }

    /// `"..."` with escapes \" \\ \n \t \r \0 \xHH.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        if !self.eat('"') {
            return Err("expected \"".to_string());
        }
        let mut bytes = Vec::new();
        loop {
            match self.bump() {
                None => return Err("unterminated \"quoted string\"".to_string()),
                Some('"') => return Ok(bytes),
                Some('\\') => match self.bump() {
                    Some('"') => bytes.push(b'"'),
                    Some('\\') => bytes.push(b'\\'),
                    Some('n') => bytes.push(b'\n'),
                    Some('t') => bytes.push(b'\t'),
                    Some('r') => bytes.push(b'\r'),
                    Some('0') => bytes.push(0),
                    Some('x') => {
                        let hex: String =
                            [self.bump(), self.bump()].into_iter().flatten().collect();
                        let byte = u8::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 2)
                            .ok_or_else(|| format!("\\x needs two hex digits, got {hex:?}"))?;
                        bytes.push(byte);
                    }
                    Some(other) => return Err(format!("unknown escape \\{other}")),
                    None => return Err("unterminated \"quoted string\"".to_string()),
                },
                Some(c) => {
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }

    fn operator(&mut self) -> Result<CompareOp, String> {
        let op = if self.rest.starts_with("!=") {
            self.rest = &self.rest[2..];
            CompareOp::NotEqual
        } else if self.rest.starts_with("==") {
            self.rest = &self.rest[2..];
            CompareOp::Equal
        } else if self.eat('=') {
            CompareOp::Equal
        } else if self.eat('>') {
            CompareOp::Greater
        } else if self.eat('<') {
            CompareOp::Less
        } else {
            return Err(format!("expected =, !=, > or < at {:?}", self.rest));
        };
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use ferrokv_client::proto::compare::Target;
    use ferrokv_client::proto::txn_op::Op;

    use super::*;

    #[test]
    fn full_transaction_in_three_sections() {
        let text =
            "value(\"k\") = \"v\"\nversion(\"n\") > 3\n\nput k \"new value\"\nget n\n\nget k\n";
        let request = parse_txn(text).expect("parses");
        assert_eq!(request.compares.len(), 2);
        assert_eq!(request.success.len(), 2);
        assert_eq!(request.failure.len(), 1);
        assert!(
            matches!(&request.success[0].op, Some(Op::Put(p)) if p.key == b"k" && p.value == b"new value")
        );
    }

    #[test]
    fn short_text_leaves_later_sections_empty() {
        let request = parse_txn("create(\"k\") = 0\n\nput k v").expect("parses");
        assert_eq!((request.compares.len(), request.success.len()), (1, 1));
        assert!(request.failure.is_empty());
    }

    #[test]
    fn leading_blank_line_means_no_compares() {
        let request = parse_txn("\nput k v\n").expect("parses");
        assert!(request.compares.is_empty());
        assert_eq!(request.success.len(), 1);
    }

    #[test]
    fn comments_are_skipped_and_crlf_is_fine() {
        let request =
            parse_txn("# check first\r\nmod(\"k\") = 5\r\n\r\ndel k\r\n").expect("parses");
        assert_eq!((request.compares.len(), request.success.len()), (1, 1));
    }

    #[test]
    fn text_after_the_third_section_is_an_error_with_its_line() {
        let err = parse_txn("\n\nget k\n\nput x y").expect_err("rejected");
        assert_eq!(err.line, 5);
    }

    #[test]
    fn compare_targets_and_operators() {
        let c = parse_compare("value(\"k\") != \"v\"").expect("parses");
        assert_eq!(
            (c.target, c.op),
            (Target::Value as i32, CompareOp::NotEqual as i32)
        );
        assert_eq!(c.value, b"v");

        let c = parse_compare("version(k) < 10").expect("parses");
        assert_eq!(
            (c.target, c.op, c.number),
            (Target::Version as i32, CompareOp::Less as i32, 10)
        );

        let c = parse_compare("mod(\"k\")==5").expect("parses");
        assert_eq!(
            (c.target, c.op, c.number),
            (Target::ModRevision as i32, CompareOp::Equal as i32, 5)
        );

        let c = parse_compare("create(\"k\") = 0").expect("parses");
        assert_eq!((c.target, c.number), (Target::CreateRevision as i32, 0));

        let c = parse_compare("exists(\"k\") != true").expect("parses");
        assert_eq!((c.target, c.exists), (Target::Exists as i32, false));

        let c = parse_compare("value(\"a key\") = bare").expect("parses");
        assert_eq!(
            (c.key.as_slice(), c.value.as_slice()),
            (&b"a key"[..], &b"bare"[..])
        );
    }

    #[test]
    fn bad_compares_say_what_is_wrong() {
        for (line, reason) in [
            ("size(\"k\") = 1", "unknown compare target"),
            ("value \"k\" = 1", "expected ("),
            ("value(\"k\" = 1", "expected )"),
            ("value(\"k\") ~ 1", "expected ="),
            ("version(\"k\") = three", "number"),
            ("exists(\"k\") > true", "= or !="),
            ("exists(\"k\") = maybe", "true or false"),
            ("value(\"k\") = \"v\" extra", "after the operand"),
            ("value(\"k) = 1", "unterminated"),
        ] {
            let err = parse_compare(line).expect_err(line);
            assert!(err.contains(reason), "{line:?}: {err}");
        }
    }

    #[test]
    fn ops_and_their_arity() {
        assert!(
            matches!(parse_op("del k").map(|o| o.op), Ok(Some(Op::Delete(d))) if d.key == b"k")
        );
        assert!(matches!(
            parse_op("delete k").map(|o| o.op),
            Ok(Some(Op::Delete(_)))
        ));
        assert!(matches!(
            parse_op("get k").map(|o| o.op),
            Ok(Some(Op::Get(_)))
        ));
        assert!(
            matches!(parse_op("put k a=b").map(|o| o.op), Ok(Some(Op::Put(p))) if p.value == b"a=b")
        );
        assert!(
            parse_op("put k")
                .expect_err("arity")
                .contains("usage: put KEY VALUE")
        );
        assert!(
            parse_op("get a b")
                .expect_err("arity")
                .contains("usage: get KEY")
        );
        assert!(
            parse_op("scan k")
                .expect_err("unknown")
                .contains("unknown op")
        );
    }

    #[test]
    fn quoted_strings_take_escapes() {
        let op = parse_op(r#"put "k\"1" "line\n\x00\xff\\""#).expect("parses");
        match op.op {
            Some(Op::Put(p)) => {
                assert_eq!(p.key, b"k\"1");
                assert_eq!(p.value, b"line\n\x00\xff\\");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse_op(r#"put k "\q""#)
                .expect_err("escape")
                .contains("unknown escape")
        );
        assert!(
            parse_op(r#"put k "\x4""#)
                .expect_err("hex")
                .contains("two hex digits")
        );
        assert!(
            parse_op(r#"put k "v"w"#)
                .expect_err("glued")
                .contains("followed by a space")
        );
    }
}
