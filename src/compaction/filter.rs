//! The `where` filter of `rewrite_data_files`: a small Spark-like predicate language turned into an
//! iceberg [`Predicate`].
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! expr      := and_expr (OR and_expr)*
//! and_expr  := not_expr (AND not_expr)*
//! not_expr  := NOT not_expr | primary
//! primary   := '(' expr ')' | predicate
//! predicate := operand cmp operand                      -- exactly one side is a column
//!            | column [NOT] IN '(' literal (',' literal)* ')'
//!            | column [NOT] BETWEEN literal AND literal
//!            | column IS [NOT] NULL
//! cmp       := '=' | '==' | '!=' | '<>' | '<' | '<=' | '>' | '>='
//! literal   := 'string' | integer | decimal | TRUE | FALSE
//! column    := name ('.' name)* | `quoted name`
//! ```
//!
//! Dates, times, timestamps and UUIDs are written as quoted strings and converted according to the
//! column's type: `ts >= '2025-01-02'` (midnight), `ts >= '2025-01-02T00:00:00Z'`,
//! `ts < '2025-01-02 12:30:00.5+02:00'`. A timestamp without an offset is read as UTC for
//! `timestamptz` columns; an offset given for a `timestamp` (without zone) column is applied and
//! the result taken as UTC wall time.
//!
//! Like Spark's `where` in `rewrite_data_files`, the predicate only *selects files*: iceberg's scan
//! planning prunes by partition values and column metrics, and every file that may contain a
//! matching row is rewritten whole. Column names are matched case-insensitively (Spark's default)
//! and rewritten to the schema's spelling, because iceberg-rust binds scan filters
//! case-sensitively.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use iceberg::expr::{Bind, Predicate, Reference};
use iceberg::spec::{Datum, PrimitiveType, Schema, Type};

/// Why a `where` filter was rejected. Positions are 1-based character offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("syntax error at position {position}: {message}")]
    Syntax { position: usize, message: String },
    #[error("unknown column '{name}' at position {position}")]
    UnknownColumn { name: String, position: usize },
    #[error("column '{name}' has type {column_type}, which a filter cannot compare")]
    UnsupportedColumn { name: String, column_type: String },
    #[error("bad literal {literal} for column '{column}' of type {column_type}: {reason}")]
    BadLiteral {
        column: String,
        column_type: String,
        literal: String,
        reason: String,
    },
    #[error("cannot bind filter to the table schema: {0}")]
    Bind(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped: `5 < x` is `x > 5`.
    fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Eq | CmpOp::NotEq => self,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
        }
    }
}

/// A literal as written, before it is typed by the column it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    /// The numeric text as written, so decimals keep their exact digits.
    Number(String),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Number(n) => f.write_str(n),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A column reference with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnRef {
    pub name: String,
    pub position: usize,
}

/// The parsed, untyped filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        column: ColumnRef,
        op: CmpOp,
        value: Literal,
    },
    In {
        column: ColumnRef,
        values: Vec<Literal>,
        negated: bool,
    },
    IsNull {
        column: ColumnRef,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A keyword-looking identifier keeps its original text for use as a column name.
    Str(String),
    Num(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character position.
    pos: usize,
    /// Whether an identifier was backquoted (then it is never a keyword).
    quoted: bool,
}

fn syntax(position: usize, message: impl Into<String>) -> FilterError {
    FilterError::Syntax {
        position,
        message: message.into(),
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let (token, next) = next_token(&chars, i)?;
        out.push(token);
        i = next;
    }
    out.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
        quoted: false,
    });
    Ok(out)
}

/// Reads the token that starts at `chars[i]` (not whitespace); returns it with the index just
/// after it.
fn next_token(chars: &[char], i: usize) -> Result<(Token, usize), FilterError> {
    let pos = i + 1;
    let plain = |tok: Tok, len: usize| -> Result<(Token, usize), FilterError> {
        let token = Token {
            tok,
            pos,
            quoted: false,
        };
        Ok((token, i + len))
    };
    let next_is = |c: char| chars.get(i + 1) == Some(&c);
    match chars[i] {
        '(' => plain(Tok::LParen, 1),
        ')' => plain(Tok::RParen, 1),
        ',' => plain(Tok::Comma, 1),
        // `=` and `==` mean the same.
        '=' => plain(Tok::Op(CmpOp::Eq), if next_is('=') { 2 } else { 1 }),
        '!' if next_is('=') => plain(Tok::Op(CmpOp::NotEq), 2),
        '!' => Err(syntax(pos, "expected '!='; use NOT for negation")),
        '<' if next_is('=') => plain(Tok::Op(CmpOp::LtEq), 2),
        '<' if next_is('>') => plain(Tok::Op(CmpOp::NotEq), 2),
        '<' => plain(Tok::Op(CmpOp::Lt), 1),
        '>' if next_is('=') => plain(Tok::Op(CmpOp::GtEq), 2),
        '>' => plain(Tok::Op(CmpOp::Gt), 1),
        '\'' => {
            // SQL string: '' is an escaped quote.
            let (s, next) = read_quoted(chars, i, "unterminated string literal")?;
            plain(Tok::Str(s), next - i)
        }
        '`' => {
            let (s, next) = read_quoted(chars, i, "unterminated quoted identifier")?;
            if s.is_empty() {
                return Err(syntax(pos, "empty quoted identifier"));
            }
            // A dotted continuation after a quoted part joins it: `a b`.c
            let token = Token {
                tok: Tok::Ident(s),
                pos,
                quoted: true,
            };
            Ok((token, next))
        }
        _ if starts_number(chars, i) => {
            let next = number_end(chars, i);
            let s: String = chars[i..next].iter().collect();
            if !is_number(&s) {
                return Err(syntax(pos, format!("invalid number '{s}'")));
            }
            plain(Tok::Num(s), next - i)
        }
        c if c.is_alphabetic() || c == '_' => {
            let mut next = i + 1;
            while next < chars.len()
                && (chars[next].is_alphanumeric() || chars[next] == '_' || chars[next] == '.')
            {
                next += 1;
            }
            let s: String = chars[i..next].iter().collect();
            if s.ends_with('.') || s.contains("..") {
                return Err(syntax(pos, format!("invalid column name '{s}'")));
            }
            plain(Tok::Ident(s), next - i)
        }
        other => Err(syntax(pos, format!("unexpected character '{other}'"))),
    }
}

/// Reads the text between the quote at `chars[start]` and its closing twin, where a doubled quote
/// stands for one; returns the text and the index after the closing quote.
fn read_quoted(
    chars: &[char],
    start: usize,
    unterminated: &str,
) -> Result<(String, usize), FilterError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut j = start + 1;
    loop {
        match chars.get(j) {
            None => return Err(syntax(start + 1, unterminated)),
            Some(&c) if c == quote && chars.get(j + 1) == Some(&quote) => {
                s.push(quote);
                j += 2;
            }
            Some(&c) if c == quote => return Ok((s, j + 1)),
            Some(&c) => {
                s.push(c);
                j += 1;
            }
        }
    }
}

/// Whether a number starts at `chars[i]`: a digit, or a sign or point followed by a digit or
/// point.
fn starts_number(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    c.is_ascii_digit()
        || ((c == '-' || c == '+' || c == '.')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == '.'))
}

/// The index after the number-like run starting at `chars[i]` (letters and digits, points, and a
/// sign right after an exponent marker); [`is_number`] then decides whether it is a number.
fn number_end(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < chars.len()
        && (chars[j].is_ascii_alphanumeric()
            || chars[j] == '.'
            || ((chars[j] == '-' || chars[j] == '+') && matches!(chars[j - 1], 'e' | 'E')))
    {
        j += 1;
    }
    j
}

fn is_number(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && s.parse::<f64>().is_ok_and(|v| v.is_finite())
}

struct ParserState {
    toks: Vec<Token>,
    i: usize,
}

impl ParserState {
    fn peek(&self) -> &Token {
        &self.toks[self.i]
    }

    fn next(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        let t = self.peek();
        matches!(&t.tok, Tok::Ident(s) if !t.quoted && s.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), FilterError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            let t = self.peek();
            Err(syntax(
                t.pos,
                format!("expected {kw}, found {}", describe(t)),
            ))
        }
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and_expr()?;
        while self.eat_keyword("or") {
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.not_expr()?;
        while self.eat_keyword("and") {
            let right = self.not_expr()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, FilterError> {
        if self.eat_keyword("not") {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        if self.peek().tok == Tok::LParen {
            self.next();
            let e = self.expr()?;
            let t = self.next();
            if t.tok != Tok::RParen {
                return Err(syntax(
                    t.pos,
                    format!("expected ')', found {}", describe(&t)),
                ));
            }
            return Ok(e);
        }
        self.predicate()
    }

    /// A column or a literal.
    fn operand(&mut self) -> Result<Operand, FilterError> {
        let t = self.next();
        match t.tok {
            Tok::Str(s) => Ok(Operand::Lit(Literal::String(s), t.pos)),
            Tok::Num(n) => Ok(Operand::Lit(Literal::Number(n), t.pos)),
            Tok::Ident(s) if !t.quoted && s.eq_ignore_ascii_case("true") => {
                Ok(Operand::Lit(Literal::Bool(true), t.pos))
            }
            Tok::Ident(s) if !t.quoted && s.eq_ignore_ascii_case("false") => {
                Ok(Operand::Lit(Literal::Bool(false), t.pos))
            }
            Tok::Ident(s) if !t.quoted && s.eq_ignore_ascii_case("null") => Err(syntax(
                t.pos,
                "NULL cannot be compared; use IS NULL or IS NOT NULL",
            )),
            Tok::Ident(s) if !t.quoted && is_reserved(&s) => Err(syntax(
                t.pos,
                format!(
                    "expected a column or a literal, found keyword {}",
                    s.to_uppercase()
                ),
            )),
            Tok::Ident(s) => Ok(Operand::Col(ColumnRef {
                name: s,
                position: t.pos,
            })),
            _ => Err(syntax(
                t.pos,
                format!("expected a column or a literal, found {}", describe(&t)),
            )),
        }
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        match self.operand()? {
            Operand::Lit(l, _) => Ok(l),
            Operand::Col(c) => Err(syntax(
                c.position,
                format!("expected a literal, found column '{}'", c.name),
            )),
        }
    }

    fn predicate(&mut self) -> Result<Expr, FilterError> {
        let left = self.operand()?;
        let t = self.peek().clone();
        match (&t.tok, left) {
            (Tok::Op(op), left) => {
                let op = *op;
                self.next();
                let right = self.operand()?;
                comparison(left, op, right)
            }
            (Tok::Ident(_), Operand::Col(column)) if !t.quoted => self.column_condition(column),
            (_, Operand::Col(column)) => Err(syntax(
                t.pos,
                format!(
                    "expected a comparison, IN, BETWEEN or IS after column '{}', found {}",
                    column.name,
                    describe(&t)
                ),
            )),
            (_, Operand::Lit(_, p)) => Err(syntax(p, "a condition must start with a column")),
        }
    }

    /// The rest of a condition on `column` that starts with a keyword: `IS [NOT] NULL`,
    /// `[NOT] IN (...)` or `[NOT] BETWEEN low AND high`.
    fn column_condition(&mut self, column: ColumnRef) -> Result<Expr, FilterError> {
        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            self.expect_keyword("null")?;
            return Ok(Expr::IsNull { column, negated });
        }
        let negated = self.eat_keyword("not");
        if self.eat_keyword("in") {
            let values = self.in_list()?;
            return Ok(Expr::In {
                column,
                values,
                negated,
            });
        }
        if self.eat_keyword("between") {
            let range = self.between(column)?;
            return Ok(if negated {
                Expr::Not(Box::new(range))
            } else {
                range
            });
        }
        let t = self.peek();
        Err(syntax(
            t.pos,
            format!(
                "expected a comparison, IN, BETWEEN or IS after column '{}', found {}",
                column.name,
                describe(t)
            ),
        ))
    }

    /// The parenthesized literal list after `IN`.
    fn in_list(&mut self) -> Result<Vec<Literal>, FilterError> {
        let open = self.next();
        if open.tok != Tok::LParen {
            return Err(syntax(
                open.pos,
                format!("expected '(' after IN, found {}", describe(&open)),
            ));
        }
        let mut values = vec![self.literal()?];
        loop {
            let t = self.next();
            match t.tok {
                Tok::Comma => values.push(self.literal()?),
                Tok::RParen => return Ok(values),
                _ => {
                    return Err(syntax(
                        t.pos,
                        format!("expected ',' or ')', found {}", describe(&t)),
                    ));
                }
            }
        }
    }

    /// `low AND high` after `BETWEEN`, as `column >= low AND column <= high`.
    fn between(&mut self, column: ColumnRef) -> Result<Expr, FilterError> {
        let low = self.literal()?;
        self.expect_keyword("and")?;
        let high = self.literal()?;
        Ok(Expr::And(
            Box::new(Expr::Compare {
                column: column.clone(),
                op: CmpOp::GtEq,
                value: low,
            }),
            Box::new(Expr::Compare {
                column,
                op: CmpOp::LtEq,
                value: high,
            }),
        ))
    }
}

/// A comparison between two operands, of which exactly one must be a column.
fn comparison(left: Operand, op: CmpOp, right: Operand) -> Result<Expr, FilterError> {
    match (left, right) {
        (Operand::Col(column), Operand::Lit(value, _)) => Ok(Expr::Compare { column, op, value }),
        (Operand::Lit(value, _), Operand::Col(column)) => Ok(Expr::Compare {
            column,
            op: op.flipped(),
            value,
        }),
        (Operand::Col(_), Operand::Col(c)) => Err(syntax(
            c.position,
            "comparing two columns is not supported; compare a column with a literal",
        )),
        (Operand::Lit(_, p), Operand::Lit(..)) => Err(syntax(
            p,
            "comparing two literals is not supported; compare a column with a literal",
        )),
    }
}

enum Operand {
    Col(ColumnRef),
    Lit(Literal, usize),
}

fn is_reserved(word: &str) -> bool {
    ["and", "or", "not", "in", "is", "between"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

fn describe(t: &Token) -> String {
    match &t.tok {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Op(_) => "an operator".to_string(),
        Tok::LParen => "'('".to_string(),
        Tok::RParen => "')'".to_string(),
        Tok::Comma => "','".to_string(),
        Tok::End => "end of input".to_string(),
    }
}

/// Parses the filter text without a schema: syntax only. Used to validate options before the
/// table is loaded.
pub fn parse_expr(text: &str) -> Result<Expr, FilterError> {
    let toks = tokenize(text)?;
    let mut p = ParserState { toks, i: 0 };
    if p.peek().tok == Tok::End {
        return Err(syntax(1, "empty filter"));
    }
    let e = p.expr()?;
    let t = p.peek();
    if t.tok != Tok::End {
        return Err(syntax(
            t.pos,
            format!("expected AND, OR or end of input, found {}", describe(t)),
        ));
    }
    Ok(e)
}

/// Parses `text` and builds an iceberg [`Predicate`] against `schema`, converting every literal to
/// the type of the column it is compared with. The result is also bound once, so a predicate the
/// scan could not use is reported here rather than at planning time.
pub fn parse_where(text: &str, schema: &Schema) -> Result<Predicate, FilterError> {
    let expr = parse_expr(text)?;
    let predicate = to_predicate(&expr, schema)?;
    predicate
        .bind(Arc::new(schema.clone()), true)
        .map_err(|e| FilterError::Bind(e.to_string()))?;
    Ok(predicate)
}

/// Builds the predicate for a parsed expression.
pub fn to_predicate(expr: &Expr, schema: &Schema) -> Result<Predicate, FilterError> {
    Ok(match expr {
        Expr::And(a, b) => to_predicate(a, schema)?.and(to_predicate(b, schema)?),
        Expr::Or(a, b) => to_predicate(a, schema)?.or(to_predicate(b, schema)?),
        Expr::Not(a) => !to_predicate(a, schema)?,
        Expr::IsNull { column, negated } => {
            let (name, _) = resolve_column(column, schema)?;
            let r = Reference::new(name);
            if *negated {
                r.is_not_null()
            } else {
                r.is_null()
            }
        }
        Expr::Compare { column, op, value } => {
            let (name, ty) = resolve_column(column, schema)?;
            let datum = to_datum(value, &name, &ty)?;
            let r = Reference::new(name);
            match op {
                CmpOp::Eq => r.equal_to(datum),
                CmpOp::NotEq => r.not_equal_to(datum),
                CmpOp::Lt => r.less_than(datum),
                CmpOp::LtEq => r.less_than_or_equal_to(datum),
                CmpOp::Gt => r.greater_than(datum),
                CmpOp::GtEq => r.greater_than_or_equal_to(datum),
            }
        }
        Expr::In {
            column,
            values,
            negated,
        } => {
            let (name, ty) = resolve_column(column, schema)?;
            let datums = values
                .iter()
                .map(|v| to_datum(v, &name, &ty))
                .collect::<Result<Vec<_>, _>>()?;
            let r = Reference::new(name);
            if *negated {
                r.is_not_in(datums)
            } else {
                r.is_in(datums)
            }
        }
    })
}

/// Finds the column (exact spelling first, then case-insensitively) and returns its canonical
/// full name and primitive type.
fn resolve_column(
    column: &ColumnRef,
    schema: &Schema,
) -> Result<(String, PrimitiveType), FilterError> {
    let field = schema
        .field_by_name(&column.name)
        .or_else(|| schema.field_by_name_case_insensitive(&column.name))
        .ok_or_else(|| FilterError::UnknownColumn {
            name: column.name.clone(),
            position: column.position,
        })?;
    let name = schema
        .name_by_field_id(field.id)
        .unwrap_or(&field.name)
        .to_string();
    match field.field_type.as_ref() {
        Type::Primitive(p) => Ok((name, p.clone())),
        other => Err(FilterError::UnsupportedColumn {
            name,
            column_type: other.to_string(),
        }),
    }
}

fn bad(
    value: &Literal,
    column: &str,
    ty: &PrimitiveType,
    reason: impl Into<String>,
) -> FilterError {
    FilterError::BadLiteral {
        column: column.to_string(),
        column_type: ty.to_string(),
        literal: value.to_string(),
        reason: reason.into(),
    }
}

/// Converts a written literal to a datum of exactly the column's type (so binding never has to
/// cast, and an out-of-range value is an error instead of an always-true/false predicate).
fn to_datum(value: &Literal, column: &str, ty: &PrimitiveType) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    match ty {
        PrimitiveType::Boolean => match value {
            Literal::Bool(b) => Ok(Datum::bool(*b)),
            Literal::String(s) if s.eq_ignore_ascii_case("true") => Ok(Datum::bool(true)),
            Literal::String(s) if s.eq_ignore_ascii_case("false") => Ok(Datum::bool(false)),
            _ => Err(err("expected true or false")),
        },
        PrimitiveType::Int | PrimitiveType::Long => integer_datum(value, column, ty),
        PrimitiveType::Float | PrimitiveType::Double => float_datum(value, column, ty),
        PrimitiveType::Decimal { precision, scale } => {
            let text = numeric_text(value).ok_or_else(|| err("expected a decimal number"))?;
            let mantissa = decimal_mantissa(text, *precision, *scale).map_err(|r| err(&r))?;
            // The single-value serialization of a decimal is its unscaled value, big-endian
            // two's complement; it is the public way to build a decimal datum of a given scale.
            Datum::try_from_bytes(&mantissa.to_be_bytes(), ty.clone())
                .map_err(|e| err(&e.to_string()))
        }
        PrimitiveType::String => match value {
            Literal::String(s) => Ok(Datum::string(s)),
            _ => Err(err("expected a quoted string")),
        },
        PrimitiveType::Uuid => match value {
            Literal::String(s) => {
                Datum::uuid_from_str(s.trim()).map_err(|_| err("expected a quoted UUID"))
            }
            _ => Err(err("expected a quoted UUID")),
        },
        PrimitiveType::Date => date_datum(value, column, ty),
        PrimitiveType::Time => time_datum(value, column, ty),
        PrimitiveType::Timestamp
        | PrimitiveType::Timestamptz
        | PrimitiveType::TimestampNs
        | PrimitiveType::TimestamptzNs => timestamp_datum(value, column, ty),
        PrimitiveType::Fixed(_) | PrimitiveType::Binary => {
            Err(err("binary columns cannot be filtered"))
        }
    }
}

/// The text of a literal written for a numeric column: a number, or a quoted one (Spark casts a
/// quoted number to the column type). `None` for a boolean.
fn numeric_text(value: &Literal) -> Option<&str> {
    match value {
        Literal::Number(n) => Some(n.as_str()),
        Literal::String(s) => Some(s.trim()),
        Literal::Bool(_) => None,
    }
}

/// [`to_datum`] for `int` and `long` columns.
fn integer_datum(value: &Literal, column: &str, ty: &PrimitiveType) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    let text = numeric_text(value).ok_or_else(|| err("expected an integer"))?;
    let v: i64 = text
        .parse()
        .map_err(|_| err("expected an integer without a fraction or exponent"))?;
    if *ty == PrimitiveType::Int {
        let v = i32::try_from(v).map_err(|_| err("out of range for int"))?;
        Ok(Datum::int(v))
    } else {
        Ok(Datum::long(v))
    }
}

/// [`to_datum`] for `float` and `double` columns.
fn float_datum(value: &Literal, column: &str, ty: &PrimitiveType) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    let text = numeric_text(value).ok_or_else(|| err("expected a number"))?;
    let v: f64 = text
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| err("expected a number"))?;
    if *ty == PrimitiveType::Float {
        Ok(Datum::float(v as f32))
    } else {
        Ok(Datum::double(v))
    }
}

/// [`to_datum`] for `date` columns: a quoted `YYYY-MM-DD`.
fn date_datum(value: &Literal, column: &str, ty: &PrimitiveType) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    let Literal::String(s) = value else {
        return Err(err("expected a quoted date 'YYYY-MM-DD'"));
    };
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| err("expected a quoted date 'YYYY-MM-DD'"))?;
    let days = d.signed_duration_since(epoch_date()).num_days();
    let days = i32::try_from(days).map_err(|_| err("date out of range"))?;
    Ok(Datum::date(days))
}

/// [`to_datum`] for `time` columns: a quoted `HH:MM:SS[.ffffff]` or `HH:MM`.
fn time_datum(value: &Literal, column: &str, ty: &PrimitiveType) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    let Literal::String(s) = value else {
        return Err(err("expected a quoted time 'HH:MM:SS[.ffffff]'"));
    };
    let t =
        parse_time(s.trim()).ok_or_else(|| err("expected a quoted time 'HH:MM:SS[.ffffff]'"))?;
    let micros = t.signed_duration_since(NaiveTime::MIN).num_microseconds();
    let micros = micros.ok_or_else(|| err("time out of range"))?;
    Datum::time_micros(micros).map_err(|e| err(&e.to_string()))
}

/// [`to_datum`] for the four timestamp types: a quoted date or date-time, see
/// [`parse_timestamp`].
fn timestamp_datum(
    value: &Literal,
    column: &str,
    ty: &PrimitiveType,
) -> Result<Datum, FilterError> {
    let err = |reason: &str| bad(value, column, ty, reason);
    let Literal::String(s) = value else {
        return Err(err(
            "expected a quoted timestamp such as '2025-01-02' or '2025-01-02T03:04:05Z'",
        ));
    };
    let utc = parse_timestamp(s.trim()).ok_or_else(|| {
        err("expected a quoted timestamp such as '2025-01-02' or '2025-01-02T03:04:05Z'")
    })?;
    match ty {
        PrimitiveType::Timestamp => Ok(Datum::timestamp_micros(utc.and_utc().timestamp_micros())),
        PrimitiveType::Timestamptz => {
            Ok(Datum::timestamptz_micros(utc.and_utc().timestamp_micros()))
        }
        PrimitiveType::TimestampNs => {
            let n = utc
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| err("out of range for nanosecond timestamps"))?;
            Ok(Datum::timestamp_nanos(n))
        }
        _ => {
            let n = utc
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| err("out of range for nanosecond timestamps"))?;
            Ok(Datum::timestamptz_nanos(n))
        }
    }
}

fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// Parses a date or date-time, with an optional `Z` or `±HH:MM` offset, into UTC wall time.
fn parse_timestamp(s: &str) -> Option<NaiveDateTime> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0);
    }
    // Accept a space instead of `T`, like Spark.
    let normalized = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        format!("{}T{}", &s[..10], &s[11..])
    } else {
        s.to_string()
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(dt.naive_utc());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(&normalized, fmt) {
            return Some(dt.naive_utc());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(&normalized, fmt) {
            return Some(dt);
        }
    }
    None
}

/// The unscaled value of `text` at `scale`, refusing digits the scale would drop and values the
/// precision cannot hold.
fn decimal_mantissa(text: &str, precision: u32, scale: u32) -> Result<i128, String> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let valid = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !valid(int_part) || !valid(frac_part) {
        return Err("expected a decimal number without exponent".to_string());
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale as usize {
        return Err(format!("more than {scale} digits after the decimal point"));
    }
    let mut digits = String::from(int_part.trim_start_matches('0'));
    digits.push_str(frac_trimmed);
    for _ in frac_trimmed.len()..scale as usize {
        digits.push('0');
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > precision as usize {
        return Err(format!("does not fit decimal({precision}, {scale})"));
    }
    let v: i128 = if significant.is_empty() {
        0
    } else {
        significant
            .parse()
            .map_err(|_| "number too large".to_string())?
    };
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use iceberg::spec::NestedField;

    use super::*;

    fn schema() -> Schema {
        Schema::builder()
            .with_schema_id(0)
            .with_fields(vec![
                NestedField::required(1, "org_id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
                NestedField::optional(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                NestedField::optional(4, "day", Type::Primitive(PrimitiveType::Date)).into(),
                NestedField::optional(5, "score", Type::Primitive(PrimitiveType::Double)).into(),
                NestedField::optional(6, "flag", Type::Primitive(PrimitiveType::Boolean)).into(),
                NestedField::optional(7, "small", Type::Primitive(PrimitiveType::Int)).into(),
                NestedField::optional(
                    8,
                    "amount",
                    Type::Primitive(PrimitiveType::Decimal {
                        precision: 10,
                        scale: 2,
                    }),
                )
                .into(),
                NestedField::optional(9, "local_ts", Type::Primitive(PrimitiveType::Timestamp))
                    .into(),
                NestedField::optional(10, "CamelCase", Type::Primitive(PrimitiveType::Int)).into(),
                NestedField::optional(11, "blob", Type::Primitive(PrimitiveType::Binary)).into(),
                NestedField::optional(
                    12,
                    "loc",
                    Type::Struct(iceberg::spec::StructType::new(vec![
                        NestedField::optional(13, "city", Type::Primitive(PrimitiveType::String))
                            .into(),
                    ])),
                )
                .into(),
            ])
            .build()
            .unwrap()
    }

    fn ok(text: &str) -> String {
        parse_where(text, &schema())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .to_string()
    }

    fn err(text: &str) -> FilterError {
        parse_where(text, &schema()).expect_err(text)
    }

    #[test]
    fn accepted_filters_render_as_expected() {
        let cases: &[(&str, &str)] = &[
            ("org_id = 5", "org_id = 5"),
            ("org_id == 5", "org_id = 5"),
            ("5 < org_id", "org_id > 5"),
            ("org_id != 5", "org_id != 5"),
            ("org_id <> 5", "org_id != 5"),
            ("org_id >= -3", "org_id >= -3"),
            ("name = 'it''s'", "name = \"it's\""),
            ("name != 'a'", "name != \"a\""),
            ("ORG_ID in (1, 2)", "org_id IN (1, 2)"),
            ("camelcase = 1", "CamelCase = 1"),
            ("name IS NULL", "name IS NULL"),
            ("name is not null", "name IS NOT NULL"),
            ("flag = true", "flag = true"),
            ("flag = 'FALSE'", "flag = false"),
            ("score > 1", "score > 1"),
            ("score > 1.5e2", "score > 150"),
            ("small < '7'", "small < 7"),
            ("amount >= 12.5", "amount >= 12.50"),
            ("loc.city = 'Oslo'", "loc.city = \"Oslo\""),
            (
                "org_id = 1 AND name = 'x' OR org_id = 2",
                "((org_id = 1) AND (name = \"x\")) OR (org_id = 2)",
            ),
            (
                "org_id = 1 AND (name = 'x' OR org_id = 2)",
                "(org_id = 1) AND ((name = \"x\") OR (org_id = 2))",
            ),
            ("NOT org_id = 1", "NOT (org_id = 1)"),
            ("org_id BETWEEN 1 AND 3", "(org_id >= 1) AND (org_id <= 3)"),
            ("`org_id` = 1", "org_id = 1"),
        ];
        for (text, rendered) in cases {
            assert_eq!(&ok(text), rendered, "{text}");
        }
        // NOT IN is a set predicate of its own.
        assert!(ok("org_id NOT IN (1,2)").contains("NOT IN"));
    }

    #[test]
    fn temporal_literals_follow_the_column_type() {
        let micros = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .unwrap()
                .naive_utc()
                .and_utc()
                .timestamp_micros()
        };
        let cases: &[(&str, Datum)] = &[
            (
                "ts >= '2025-01-02'",
                Datum::timestamptz_micros(micros("2025-01-02T00:00:00Z")),
            ),
            (
                "ts >= '2025-01-02T00:00:00Z'",
                Datum::timestamptz_micros(micros("2025-01-02T00:00:00Z")),
            ),
            (
                "ts >= '2025-01-02 03:00:00+02:00'",
                Datum::timestamptz_micros(micros("2025-01-02T01:00:00Z")),
            ),
            (
                "ts >= '2025-01-02T03:04:05.250'",
                Datum::timestamptz_micros(micros("2025-01-02T03:04:05.25Z")),
            ),
            (
                "local_ts >= '2025-01-02T03:04'",
                Datum::timestamp_micros(micros("2025-01-02T03:04:00Z")),
            ),
            ("day = '1970-01-05'", Datum::date(4)),
        ];
        for (text, datum) in cases {
            let p = parse_where(text, &schema()).unwrap();
            let Predicate::Binary(b) = &p else {
                panic!("{text}: {p}")
            };
            assert_eq!(b.literal(), datum, "{text}");
        }
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "org_id = ",
                10,
                "expected a column or a literal, found end of input",
            ),
            ("org_id = 1 AND", 15, "found end of input"),
            ("(org_id = 1", 12, "expected ')'"),
            ("org_id = 1)", 11, "expected AND, OR or end of input"),
            ("name = 'abc", 8, "unterminated string literal"),
            (
                "org_id IN ()",
                12,
                "expected a column or a literal, found ')'",
            ),
            ("org_id IN 1", 11, "expected '(' after IN"),
            ("org_id = NULL", 10, "use IS NULL"),
            ("org_id", 7, "expected a comparison, IN, BETWEEN or IS"),
            ("org_id = name", 10, "comparing two columns"),
            ("1 = 2", 1, "comparing two literals"),
            ("org_id # 1", 8, "unexpected character '#'"),
            ("org_id ! 1", 8, "expected '!='"),
            ("", 1, "empty filter"),
            ("org_id IS 1", 11, "expected null"),
            ("a = 1 AND AND b = 2", 11, "found keyword AND"),
        ];
        for (text, pos, fragment) in cases {
            match parse_expr(text) {
                Err(FilterError::Syntax { position, message }) => {
                    assert_eq!(position, *pos, "{text}: {message}");
                    assert!(message.contains(fragment), "{text}: {message}");
                }
                other => panic!("{text}: expected a syntax error, got {other:?}"),
            }
        }
        assert_eq!(
            parse_expr("org_id = ").unwrap_err().to_string(),
            "syntax error at position 10: expected a column or a literal, found end of input"
        );
    }

    #[test]
    fn schema_errors() {
        assert_eq!(
            err("nope = 1"),
            FilterError::UnknownColumn {
                name: "nope".into(),
                position: 1
            }
        );
        assert_eq!(
            err("org_id = 1 or missing = 2").to_string(),
            "unknown column 'missing' at position 15"
        );
        let bad_literal: &[(&str, &str)] = &[
            ("org_id = 'abc'", "expected an integer"),
            ("org_id = 1.5", "expected an integer"),
            ("small = 3000000000", "out of range for int"),
            ("name = 5", "expected a quoted string"),
            ("flag = 1", "expected true or false"),
            ("ts > 5", "expected a quoted timestamp"),
            ("ts > 'yesterday'", "expected a quoted timestamp"),
            ("day = '2025-13-01'", "expected a quoted date"),
            ("amount = 1.234", "more than 2 digits"),
            ("amount = 123456789.1", "does not fit decimal(10, 2)"),
            ("blob = 'x'", "binary columns cannot be filtered"),
        ];
        for (text, fragment) in bad_literal {
            match err(text) {
                e @ FilterError::BadLiteral { .. } => {
                    assert!(e.to_string().contains(fragment), "{text}: {e}")
                }
                other => panic!("{text}: expected BadLiteral, got {other:?}"),
            }
        }
        assert!(matches!(
            err("loc = 'x'"),
            FilterError::UnsupportedColumn { .. }
        ));
        assert_eq!(
            err("org_id = 'abc'").to_string(),
            "bad literal 'abc' for column 'org_id' of type long: expected an integer without a fraction or exponent"
        );
    }

    #[test]
    fn decimal_mantissa_rules() {
        assert_eq!(decimal_mantissa("12.5", 10, 2), Ok(1250));
        assert_eq!(decimal_mantissa("-0.01", 10, 2), Ok(-1));
        assert_eq!(decimal_mantissa("7", 3, 2), Ok(700));
        assert_eq!(decimal_mantissa("1.500", 10, 1), Ok(15));
        assert!(decimal_mantissa("10", 3, 2).is_err());
        assert!(decimal_mantissa("1e3", 10, 0).is_err());
        assert!(decimal_mantissa(".", 10, 0).is_err());
    }
}
