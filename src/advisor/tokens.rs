//! Token-level work on SQL text with sqlparser's tokenizer: recognizing schema statements
//! before they are executed, rewriting SQLite-only syntax the parser does not know, and
//! numbering parameters as SQLite does.

use std::collections::HashMap;

use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// The kinds of schema statement the advisor copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaKind {
    /// `CREATE TABLE`.
    Table,
    /// `CREATE [UNIQUE] INDEX`.
    Index,
    /// `CREATE VIEW`.
    View,
}

/// Tokenizes `sql` with positions; `None` when the text does not tokenize.
pub(crate) fn tokenize(sql: &str) -> Option<Vec<TokenWithSpan>> {
    Tokenizer::new(&SQLiteDialect {}, sql)
        .tokenize_with_location()
        .ok()
}

fn significant(tokens: &[TokenWithSpan]) -> impl Iterator<Item = &TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
}

/// The unquoted keyword a token is, if any.
fn keyword(token: &Token) -> Option<Keyword> {
    match token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    }
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// What schema text from `sqlite_schema` is, when it is exactly one `CREATE TABLE`,
/// `CREATE [UNIQUE] INDEX` or `CREATE VIEW` statement. Schema text is untrusted (any process
/// that can write the file can put anything there), so anything else (triggers, virtual
/// tables, a second statement after a semicolon, text that does not tokenize) is refused.
pub(crate) fn schema_kind(sql: &str) -> Option<SchemaKind> {
    let tokens = tokenize(sql)?;
    let mut words = significant(&tokens);
    if keyword(&words.next()?.token)? != Keyword::CREATE {
        return None;
    }
    let kind = match keyword(&words.next()?.token)? {
        Keyword::TABLE => SchemaKind::Table,
        Keyword::VIEW => SchemaKind::View,
        Keyword::INDEX => SchemaKind::Index,
        Keyword::UNIQUE if keyword(&words.next()?.token)? == Keyword::INDEX => SchemaKind::Index,
        _ => return None,
    };
    let mut after_semicolon = false;
    for t in words {
        if after_semicolon {
            return None;
        }
        after_semicolon = t.token == Token::SemiColon;
    }
    Some(kind)
}

/// Byte offset of a tokenizer location (1-based line, 1-based column in chars) in `text`.
fn offset(text: &str, at: Location) -> Option<usize> {
    let mut line_start = 0;
    for _ in 1..at.line {
        line_start += text[line_start..].find('\n')? + 1;
    }
    let col = usize::try_from(at.column).ok()?.checked_sub(1)?;
    match text[line_start..].char_indices().nth(col) {
        Some((i, _)) => Some(line_start + i),
        None => Some(text.len()),
    }
}

/// Rewrites SQLite syntax that sqlparser's SQLite dialect does not parse into forms it does,
/// for analysis only (the rewritten text is never run): `x IS y` / `x IS NOT y` become
/// `IS [NOT] DISTINCT FROM`, `GLOB` becomes `LIKE`, `INDEXED BY name` and `NOT INDEXED` are
/// dropped, postfix `ISNULL` / `NOTNULL` become `IS [NOT] NULL`, `CROSS JOIN` becomes `JOIN`
/// (sqlparser refuses `CROSS JOIN ... ON`, which SQLite allows). Literals are kept byte for
/// byte: edits are spliced into the original text by token position.
pub(crate) fn normalize(sql: &str) -> String {
    let Some(tokens) = tokenize(sql) else {
        return sql.to_owned();
    };
    let sig: Vec<&TokenWithSpan> = significant(&tokens).collect();
    // (start, end, replacement), in text order.
    let mut edits: Vec<(Location, Location, &'static str)> = Vec::new();
    let mut i = 0;
    while i < sig.len() {
        let t = &sig[i].token;
        let next = sig.get(i + 1).map(|t| &t.token);
        let after = sig.get(i + 2).map(|t| &t.token);
        let plain_is_operand = |tok: Option<&Token>| {
            !tok.is_some_and(|t| {
                matches!(
                    keyword(t),
                    Some(Keyword::NULL | Keyword::TRUE | Keyword::FALSE | Keyword::DISTINCT)
                )
            })
        };
        if keyword(t) == Some(Keyword::IS) {
            if next.and_then(keyword) == Some(Keyword::NOT) {
                if plain_is_operand(after) {
                    edits.push((sig[i].span.start, sig[i + 1].span.end, "IS DISTINCT FROM"));
                    i += 2;
                    continue;
                }
            } else if plain_is_operand(next) {
                edits.push((sig[i].span.start, sig[i].span.end, "IS NOT DISTINCT FROM"));
            }
        } else if is_word(t, "GLOB") {
            edits.push((sig[i].span.start, sig[i].span.end, "LIKE"));
        } else if is_word(t, "ISNULL") {
            edits.push((sig[i].span.start, sig[i].span.end, "IS NULL"));
        } else if is_word(t, "NOTNULL") {
            edits.push((sig[i].span.start, sig[i].span.end, "IS NOT NULL"));
        } else if is_word(t, "INDEXED") && next.and_then(keyword) == Some(Keyword::BY) {
            if let Some(name) = sig.get(i + 2) {
                edits.push((sig[i].span.start, name.span.end, ""));
                i += 3;
                continue;
            }
        } else if keyword(t) == Some(Keyword::CROSS)
            && next.and_then(keyword) == Some(Keyword::JOIN)
        {
            // SQLite allows `CROSS JOIN ... ON`, which sqlparser refuses: the advisor skipped
            // every such statement (tests/advisor_props.rs). For analysis it is a plain join;
            // the planner, which verifies every candidate, still sees the CROSS JOIN's order.
            edits.push((sig[i].span.start, sig[i].span.end, ""));
        } else if keyword(t) == Some(Keyword::NOT) && next.is_some_and(|n| is_word(n, "INDEXED")) {
            edits.push((sig[i].span.start, sig[i + 1].span.end, ""));
            i += 2;
            continue;
        }
        i += 1;
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (start, end, replacement) in edits {
        let (Some(s), Some(e)) = (offset(sql, start), offset(sql, end)) else {
            return sql.to_owned();
        };
        if s < at || e < s {
            return sql.to_owned();
        }
        out.push_str(&sql[at..s]);
        out.push_str(replacement);
        at = e;
    }
    out.push_str(&sql[at..]);
    out
}

/// The SQLite parameter index of every placeholder in `sql`, by its position, numbered as
/// SQLite numbers them: `?NNN` is NNN, a bare `?` is one more than the largest so far, and a
/// named parameter (`:x`, `@x`, `$x`) gets the next number at its first use.
pub(crate) fn parameter_indexes(sql: &str) -> HashMap<(u64, u64), usize> {
    let mut found = HashMap::new();
    let Some(tokens) = tokenize(sql) else {
        return found;
    };
    let mut largest = 0usize;
    let mut named: HashMap<String, usize> = HashMap::new();
    for (i, t) in tokens.iter().enumerate() {
        // `?N` and `$x` are one token; `:x` and `@x` are a sign and a word, which the parser
        // joins into one placeholder at the sign's position.
        let joined;
        let text = match &t.token {
            Token::Placeholder(text) => text,
            Token::Colon | Token::AtSign => match tokens.get(i + 1) {
                Some(TokenWithSpan {
                    token: Token::Word(w),
                    span,
                }) if span.start == t.span.end => {
                    joined = format!("{}{}", t.token, w.value);
                    &joined
                }
                _ => continue,
            },
            _ => continue,
        };
        let index = if text == "?" {
            largest += 1;
            largest
        } else if let Some(n) = text.strip_prefix('?').and_then(|n| n.parse::<usize>().ok()) {
            largest = largest.max(n);
            n
        } else if let Some(&n) = named.get(text) {
            n
        } else {
            largest += 1;
            named.insert(text.to_owned(), largest);
            largest
        };
        found.insert((t.span.start.line, t.span.start.column), index);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;

    #[test]
    fn recognizes_schema_statements() -> Result<()> {
        assert_eq!(schema_kind("CREATE TABLE t(a)"), Some(SchemaKind::Table));
        assert_eq!(
            schema_kind("create unique index i on t(a);"),
            Some(SchemaKind::Index)
        );
        assert_eq!(
            schema_kind("CREATE VIEW v AS SELECT a FROM t -- note"),
            Some(SchemaKind::View)
        );
        assert_eq!(
            schema_kind("CREATE TABLE e(d TEXT CHECK (d GLOB '[0-9]'))"),
            Some(SchemaKind::Table)
        );
        assert_eq!(
            schema_kind("CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END"),
            None
        );
        assert_eq!(schema_kind("CREATE VIRTUAL TABLE f USING fts5(a)"), None);
        assert_eq!(schema_kind("CREATE TABLE t(a); DROP TABLE u"), None);
        assert_eq!(schema_kind("CREATE TEMP TABLE t(a)"), None);
        assert_eq!(schema_kind("'unterminated"), None);
        Ok(())
    }

    #[test]
    fn normalizes_sqlite_only_syntax() -> Result<()> {
        assert_eq!(
            normalize("SELECT * FROM t INDEXED BY i WHERE a IS ?1 AND b IS NOT 'x''y'"),
            "SELECT * FROM t  WHERE a IS NOT DISTINCT FROM ?1 AND b IS DISTINCT FROM 'x''y'"
        );
        assert_eq!(
            normalize("SELECT * FROM t NOT INDEXED WHERE a IS NULL AND b GLOB 'é*' AND c NOTNULL"),
            "SELECT * FROM t  WHERE a IS NULL AND b LIKE 'é*' AND c IS NOT NULL"
        );
        assert_eq!(
            normalize("SELECT * FROM t CROSS JOIN u ON u.t = t.id"),
            "SELECT * FROM t  JOIN u ON u.t = t.id"
        );
        Ok(())
    }

    #[test]
    fn numbers_parameters_like_sqlite() -> Result<()> {
        let found = parameter_indexes("SELECT ?, ?5, ?, :a, :a, @b");
        let mut indexes: Vec<(u64, usize)> = found.iter().map(|((_, c), i)| (*c, *i)).collect();
        indexes.sort();
        let only: Vec<usize> = indexes.into_iter().map(|(_, i)| i).collect();
        assert_eq!(only, vec![1, 5, 6, 7, 7, 8]);
        Ok(())
    }
}
