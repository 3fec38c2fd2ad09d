//! A small evaluator for the subset of CEL that the snapshot CRDs use in
//! their `x-kubernetes-validations` rules.
//!
//! Supported: `self` and `oldSelf`, field selection (with the Kubernetes
//! escaping of reserved words such as `__namespace__`), `has(x.f)`,
//! `size(x)`, `!`, `&&`, `||`, comparisons (`==`, `!=`, `<`, `<=`, `>`,
//! `>=`), parentheses, and integer, string, boolean and null literals.
//! A rule outside this subset fails to parse and is reported as ignored.

use serde_json::Value;
use std::cmp::Ordering;
use std::fmt;

/// A parsed rule expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// `self` or `oldSelf`.
    Var(Var),
    /// `operand.field`.
    Select(Box<Expr>, String),
    /// `has(operand.field)`.
    Has(Box<Expr>, String),
    /// `size(operand)`.
    Size(Box<Expr>),
    /// `!operand`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a <op> b`.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// A literal value.
    Lit(Value),
}

/// The two variables a rule can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    /// The value at the rule's node.
    SelfValue,
    /// The previous value at the same node (transition rules only).
    OldSelf,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Why a rule could not be evaluated; the apiserver reports these as an
/// invalid value on the rule's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalError {
    /// Selection of a field that the object does not have.
    NoSuchKey(String),
    /// An operator applied to values of the wrong type.
    NoMatchingOverload(&'static str),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::NoSuchKey(k) => write!(f, "no such key: {k}"),
            EvalError::NoMatchingOverload(op) => {
                write!(f, "no matching overload for '{op}'")
            }
        }
    }
}

impl Expr {
    /// Whether the expression references `oldSelf` (a transition rule).
    pub(crate) fn uses_old_self(&self) -> bool {
        match self {
            Expr::Var(v) => *v == Var::OldSelf,
            Expr::Select(e, _) | Expr::Has(e, _) | Expr::Size(e) | Expr::Not(e) => {
                e.uses_old_self()
            }
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) => {
                a.uses_old_self() || b.uses_old_self()
            }
            Expr::Lit(_) => false,
        }
    }

    /// Evaluates the expression to a boolean. `old` must be given for
    /// transition rules.
    pub(crate) fn eval_bool(&self, this: &Value, old: Option<&Value>) -> Result<bool, EvalError> {
        match self.eval(this, old)? {
            Value::Bool(b) => Ok(b),
            _ => Err(EvalError::NoMatchingOverload("bool")),
        }
    }

    fn eval(&self, this: &Value, old: Option<&Value>) -> Result<Value, EvalError> {
        match self {
            Expr::Var(Var::SelfValue) => Ok(this.clone()),
            Expr::Var(Var::OldSelf) => Ok(old.cloned().unwrap_or(Value::Null)),
            Expr::Select(e, field) => match e.eval(this, old)? {
                Value::Object(map) => map
                    .get(field)
                    .cloned()
                    .ok_or_else(|| EvalError::NoSuchKey(field.clone())),
                _ => Err(EvalError::NoSuchKey(field.clone())),
            },
            Expr::Has(e, field) => match e.eval(this, old)? {
                Value::Object(map) => Ok(Value::Bool(map.get(field).is_some_and(|v| !v.is_null()))),
                _ => Err(EvalError::NoMatchingOverload("has")),
            },
            Expr::Size(e) => {
                let n = match e.eval(this, old)? {
                    Value::String(s) => s.chars().count(),
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    _ => return Err(EvalError::NoMatchingOverload("size")),
                };
                Ok(Value::from(n as u64))
            }
            Expr::Not(e) => Ok(Value::Bool(!e.eval_bool(this, old)?)),
            // CEL's logical operators are commutative with respect to
            // errors: an error on one side is absorbed if the other side
            // decides the result.
            Expr::And(a, b) => match (a.eval_bool(this, old), b.eval_bool(this, old)) {
                (Ok(false), _) | (_, Ok(false)) => Ok(Value::Bool(false)),
                (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            Expr::Or(a, b) => match (a.eval_bool(this, old), b.eval_bool(this, old)) {
                (Ok(true), _) | (_, Ok(true)) => Ok(Value::Bool(true)),
                (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
            Expr::Compare(op, a, b) => {
                let (l, r) = (a.eval(this, old)?, b.eval(this, old)?);
                compare(*op, &l, &r).map(Value::Bool)
            }
            Expr::Lit(v) => Ok(v.clone()),
        }
    }
}

fn compare(op: CmpOp, l: &Value, r: &Value) -> Result<bool, EvalError> {
    match op {
        CmpOp::Eq => return Ok(json_eq(l, r)),
        CmpOp::Ne => return Ok(!json_eq(l, r)),
        _ => {}
    }
    let ord = match (l, r) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b)
                .ok_or(EvalError::NoMatchingOverload("compare"))?
        }
        (Value::String(a), Value::String(b)) => a.cmp(b),
        _ => return Err(EvalError::NoMatchingOverload("compare")),
    };
    Ok(match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
    })
}

/// Deep equality where numbers compare by value (`1 == 1.0`).
fn json_eq(l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => l == r,
    }
}

/// Undoes the Kubernetes escaping of property names in CEL: reserved words
/// are written `__word__`, and `__dot__`, `__dash__`, `__slash__` and
/// `__underscores__` stand for `.`, `-`, `/` and `__`.
fn unescape_field(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if let Some(inner) = name.strip_prefix("__").and_then(|s| s.strip_suffix("__"))
        && RESERVED.contains(&inner)
    {
        return inner.to_string();
    }
    name.replace("__underscores__", "\u{0}")
        .replace("__dot__", ".")
        .replace("__dash__", "-")
        .replace("__slash__", "/")
        .replace('\u{0}', "__")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    LParen,
    RParen,
    Dot,
    Not,
    And,
    Or,
    Cmp(CmpOp),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '.' => {
                out.push(Tok::Dot);
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push(Tok::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push(Tok::Or);
                i += 2;
            }
            '=' if next == Some('=') => {
                out.push(Tok::Cmp(CmpOp::Eq));
                i += 2;
            }
            '!' if next == Some('=') => {
                out.push(Tok::Cmp(CmpOp::Ne));
                i += 2;
            }
            '!' => {
                out.push(Tok::Not);
                i += 1;
            }
            '<' | '>' => {
                let eq = next == Some('=');
                out.push(Tok::Cmp(match (c, eq) {
                    ('<', true) => CmpOp::Le,
                    ('<', false) => CmpOp::Lt,
                    (_, true) => CmpOp::Ge,
                    (_, false) => CmpOp::Gt,
                }));
                i += if eq { 2 } else { 1 };
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\\') => return Err("escapes in string literals".into()),
                        Some(&q) if q == quote => break,
                        Some(&ch) => s.push(ch),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                out.push(Tok::Int(
                    text.parse().map_err(|_| "integer literal out of range")?,
                ));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unsupported character {other:?}")),
        }
    }
    Ok(out)
}

/// Parses a rule in the supported subset, or says why it is outside it.
pub(crate) fn parse(src: &str) -> Result<Expr, String> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.bump() {
            Some(got) if got == t => Ok(()),
            got => Err(format!("expected {t:?}, found {got:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let l = self.postfix()?;
        if let Some(Tok::Cmp(op)) = self.peek().cloned() {
            self.pos += 1;
            let r = self.postfix()?;
            return Ok(Expr::Compare(op, Box::new(l), Box::new(r)));
        }
        Ok(l)
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while self.peek() == Some(&Tok::Dot) {
            self.pos += 1;
            match self.bump() {
                Some(Tok::Ident(f)) => e = Expr::Select(Box::new(e), unescape_field(&f)),
                got => return Err(format!("expected a field name, found {got:?}")),
            }
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.bump() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(e)
            }
            Some(Tok::Int(n)) => Ok(Expr::Lit(Value::from(n))),
            Some(Tok::Str(s)) => Ok(Expr::Lit(Value::String(s))),
            Some(Tok::Ident(id)) => match id.as_str() {
                "self" => Ok(Expr::Var(Var::SelfValue)),
                "oldSelf" => Ok(Expr::Var(Var::OldSelf)),
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "has" => {
                    self.expect(Tok::LParen)?;
                    let arg = self.postfix()?;
                    self.expect(Tok::RParen)?;
                    match arg {
                        Expr::Select(operand, field) => Ok(Expr::Has(operand, field)),
                        _ => Err("has() needs a field selection".into()),
                    }
                }
                "size" => {
                    self.expect(Tok::LParen)?;
                    let arg = self.or()?;
                    self.expect(Tok::RParen)?;
                    Ok(Expr::Size(Box::new(arg)))
                }
                other => Err(format!("unsupported identifier {other:?}")),
            },
            got => Err(format!("unexpected token {got:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: &str, this: Value, old: Option<Value>) -> Result<bool, EvalError> {
        parse(rule).unwrap().eval_bool(&this, old.as_ref())
    }

    #[test]
    fn exactly_one_of() {
        let r = "(has(self.volumeHandle) && !has(self.snapshotHandle)) || (!has(self.volumeHandle)\n && has(self.snapshotHandle))";
        assert_eq!(eval(r, json!({"volumeHandle": "v"}), None), Ok(true));
        assert_eq!(eval(r, json!({"snapshotHandle": "s"}), None), Ok(true));
        assert_eq!(
            eval(r, json!({"volumeHandle": "v", "snapshotHandle": "s"}), None),
            Ok(false)
        );
        assert_eq!(eval(r, json!({}), None), Ok(false));
    }

    #[test]
    fn transition_rules() {
        let r = "!has(oldSelf.uid) || (has(self.uid) && self.uid == oldSelf.uid)";
        assert!(parse(r).unwrap().uses_old_self());
        assert_eq!(eval(r, json!({}), Some(json!({}))), Ok(true));
        assert_eq!(
            eval(r, json!({"uid": "a"}), Some(json!({"uid": "a"}))),
            Ok(true)
        );
        assert_eq!(
            eval(r, json!({"uid": "b"}), Some(json!({"uid": "a"}))),
            Ok(false)
        );
        assert_eq!(eval(r, json!({}), Some(json!({"uid": "a"}))), Ok(false));
        assert_eq!(
            eval(
                "self == oldSelf",
                json!({"a": [1]}),
                Some(json!({"a": [1]}))
            ),
            Ok(true)
        );
        assert_eq!(
            eval("self == oldSelf", json!("x"), Some(json!("y"))),
            Ok(false)
        );
    }

    #[test]
    fn escaped_names_and_missing_keys() {
        let r = "has(self.name) && has(self.__namespace__)";
        assert_eq!(
            eval(r, json!({"name": "a", "namespace": "b"}), None),
            Ok(true)
        );
        assert_eq!(eval(r, json!({"name": "a"}), None), Ok(false));
        let r = "self.name == oldSelf.name";
        assert_eq!(
            eval(r, json!({}), Some(json!({"name": "a"}))),
            Err(EvalError::NoSuchKey("name".into()))
        );
    }

    #[test]
    fn size_and_literals() {
        assert_eq!(eval("size(self) > 0", json!(""), None), Ok(false));
        assert_eq!(eval("size(self) > 0", json!("é"), None), Ok(true));
        assert_eq!(eval("self != 'x'", json!("x"), None), Ok(false));
        assert!(parse("self.all(x, x > 0)").is_err());
        assert!(parse("self.matches('^a$')").is_err());
    }
}
