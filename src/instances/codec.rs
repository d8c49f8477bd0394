//! The compact encoding of one transaction's changes in a `strata_changes` row: what the other
//! instances need to run the same invalidation rules (table, kind, rowid, and the watched
//! columns' old and new values), nothing more.
//!
//! Layout: a version byte; the tables (name, then the watched columns, each a length-prefixed
//! UTF-8 string); then the changes, each a byte of table index, a byte of kind and flags, the
//! rowid as a zigzag varint and the values present. A single-row update of one watched column
//! encodes in about 30 bytes, which SQLite stores inline in the row.

use std::sync::Arc;

use rusqlite::types::Value;

use crate::events::{Change, ChangeKind, Values};

const VERSION: u8 = 1;

/// A table and its watched columns (`None` for rows the update hook reported without values).
type TableKey<'a> = (&'a str, Option<&'a Arc<[Arc<str>]>>);
const HAS_OLD: u8 = 4;
const HAS_NEW: u8 = 8;

/// Appends the encoding of `changes` to `out`.
pub(crate) fn encode(changes: &[Change], out: &mut Vec<u8>) {
    out.push(VERSION);
    // A transaction touches few distinct tables: a linear search beats hashing here.
    let mut tables: Vec<TableKey<'_>> = Vec::new();
    let mut index = Vec::with_capacity(changes.len());
    for change in changes {
        let columns = change
            .old
            .as_ref()
            .or(change.new.as_ref())
            .map(|v| &v.columns);
        let key = (&*change.table, columns);
        let at = match tables.iter().position(|t| {
            t.0 == key.0
                && match (t.1, key.1) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
        }) {
            Some(at) => at,
            None => {
                tables.push(key);
                tables.len() - 1
            }
        };
        index.push(at);
    }
    varint(out, tables.len() as u64);
    for (name, columns) in &tables {
        bytes(out, name.as_bytes());
        let columns = columns.map_or(&[][..], |c| &c[..]);
        varint(out, columns.len() as u64);
        for column in columns {
            bytes(out, column.as_bytes());
        }
    }
    varint(out, changes.len() as u64);
    for (change, table) in changes.iter().zip(index) {
        varint(out, table as u64);
        let kind = match change.kind {
            ChangeKind::Insert => 0,
            ChangeKind::Update => 1,
            ChangeKind::Delete => 2,
        };
        let flags =
            u8::from(change.old.is_some()) * HAS_OLD + u8::from(change.new.is_some()) * HAS_NEW;
        out.push(kind | flags);
        varint(out, zigzag(change.rowid));
        for values in [&change.old, &change.new].into_iter().flatten() {
            for value in &values.values {
                encode_value(value, out);
            }
        }
    }
}

/// Decodes what [`encode`] wrote; `None` if the bytes are not such an encoding (a gap for the
/// reader: it cannot tell what they invalidate).
pub(crate) fn decode(mut input: &[u8]) -> Option<Vec<Change>> {
    let r = &mut input;
    if take(r, 1)?[0] != VERSION {
        return None;
    }
    let n_tables = usize::try_from(read_varint(r)?).ok()?;
    let mut tables = Vec::with_capacity(n_tables.min(1024));
    for _ in 0..n_tables {
        let name: Arc<str> = Arc::from(read_str(r)?);
        let n_columns = usize::try_from(read_varint(r)?).ok()?;
        let mut columns = Vec::with_capacity(n_columns.min(1024));
        for _ in 0..n_columns {
            columns.push(Arc::<str>::from(read_str(r)?));
        }
        tables.push((name, Arc::<[Arc<str>]>::from(columns)));
    }
    let n_changes = usize::try_from(read_varint(r)?).ok()?;
    let mut changes = Vec::with_capacity(n_changes.min(1 << 20));
    for _ in 0..n_changes {
        let (table, columns) = tables.get(usize::try_from(read_varint(r)?).ok()?)?;
        let byte = take(r, 1)?[0];
        let kind = match byte & 3 {
            0 => ChangeKind::Insert,
            1 => ChangeKind::Update,
            2 => ChangeKind::Delete,
            _ => return None,
        };
        let rowid = unzigzag(read_varint(r)?);
        let mut values = |present: bool| -> Option<Option<Values>> {
            if !present {
                return Some(None);
            }
            let values = (0..columns.len())
                .map(|_| decode_value(r))
                .collect::<Option<Vec<_>>>()?;
            Some(Some(Values {
                columns: Arc::clone(columns),
                values,
            }))
        };
        let old = values(byte & HAS_OLD != 0)?;
        let new = values(byte & HAS_NEW != 0)?;
        changes.push(Change {
            table: Arc::clone(table),
            kind,
            rowid,
            old,
            new,
        });
    }
    input.is_empty().then_some(changes)
}

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0),
        Value::Integer(i) => {
            out.push(1);
            varint(out, zigzag(*i));
        }
        Value::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Text(t) => {
            out.push(3);
            bytes(out, t.as_bytes());
        }
        Value::Blob(b) => {
            out.push(4);
            bytes(out, b);
        }
    }
}

fn decode_value(r: &mut &[u8]) -> Option<Value> {
    Some(match take(r, 1)?[0] {
        0 => Value::Null,
        1 => Value::Integer(unzigzag(read_varint(r)?)),
        2 => Value::Real(f64::from_le_bytes(take(r, 8)?.try_into().ok()?)),
        3 => Value::Text(read_str(r)?.to_owned()),
        4 => {
            let n = usize::try_from(read_varint(r)?).ok()?;
            Value::Blob(take(r, n)?.to_vec())
        }
        _ => return None,
    })
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Some(head)
}

fn read_varint(r: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = take(r, 1)?[0];
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn read_str<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
    let n = usize::try_from(read_varint(r)?).ok()?;
    std::str::from_utf8(take(r, n)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    fn values(columns: &Arc<[Arc<str>]>, values: Vec<Value>) -> Option<Values> {
        Some(Values {
            columns: Arc::clone(columns),
            values,
        })
    }

    #[test]
    fn changes_survive_the_round_trip() -> Result<()> {
        let columns: Arc<[Arc<str>]> = Arc::from(vec![Arc::from("user_id"), Arc::from("name")]);
        let t: Arc<str> = Arc::from("categories");
        let changes = vec![
            Change {
                table: Arc::clone(&t),
                kind: ChangeKind::Update,
                rowid: -5,
                old: values(&columns, vec![Value::Integer(7), Value::Text("a".into())]),
                new: values(&columns, vec![Value::Integer(i64::MIN), Value::Null]),
            },
            Change {
                table: Arc::from("plain"),
                kind: ChangeKind::Insert,
                rowid: i64::MAX,
                old: None,
                new: None,
            },
            Change {
                table: t,
                kind: ChangeKind::Delete,
                rowid: 300,
                old: values(&columns, vec![Value::Real(1.5), Value::Blob(vec![0, 255])]),
                new: None,
            },
        ];
        let mut out = Vec::new();
        encode(&changes, &mut out);
        assert_eq!(decode(&out), Some(changes));
        Ok(())
    }

    #[test]
    fn damaged_bytes_decode_to_none() -> Result<()> {
        let change = Change {
            table: Arc::from("t"),
            kind: ChangeKind::Insert,
            rowid: 1,
            old: None,
            new: None,
        };
        let mut out = Vec::new();
        encode(&[change], &mut out);
        assert!(decode(&out[..out.len() - 1]).is_none(), "truncated");
        out.push(0);
        assert!(decode(&out).is_none(), "trailing bytes");
        assert!(decode(&[9]).is_none(), "unknown version");
        Ok(())
    }
}
