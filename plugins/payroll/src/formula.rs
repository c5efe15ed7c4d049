//! Formulas of salary components: `base * 0.05`, `min(gross * 0.08, 500)`. Checked when
//! saved (syntax, unknown names, cycles between components), each error pointing at its
//! position; evaluated exactly in [`Decimal`].
//!
//! Grammar: numbers (`0.05`), names (`base`, `pension_rate`), `+ - * /`, unary minus,
//! parentheses, and the functions `min(a, b, ...)`, `max(a, b, ...)` and `round(x, places)`
//! (half away from zero).

use crate::money::{Decimal, MathError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The longest formula kept.
pub const MAX_LEN: usize = 500;
/// How deeply parentheses and calls may nest.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Number(Decimal),
    /// A name and where it starts.
    Name(String, usize),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
    /// A function, its arguments, and where it starts.
    Call(Func, Vec<Expr>, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Min,
    Max,
    Round,
}

/// What is wrong with a formula, and where (a character offset from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormulaError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for FormulaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.position + 1)
    }
}

fn error(position: usize, message: impl Into<String>) -> FormulaError {
    FormulaError { position, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(Decimal),
    Name(String),
    Op(char),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<(Token, usize)>, FormulaError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' => i += 1,
            '0'..='9' | '.' => {
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let literal: String = chars[start..i].iter().collect();
                let n = Decimal::parse(&literal).ok_or_else(|| {
                    error(start, format!("`{literal}` is not a number (digits, one point, 9 decimals at most)"))
                })?;
                out.push((Token::Number(n), start));
            }
            'a'..='z' | '_' => {
                while i < chars.len() && (chars[i].is_ascii_lowercase() || chars[i].is_ascii_digit() || chars[i] == '_')
                {
                    i += 1;
                }
                out.push((Token::Name(chars[start..i].iter().collect()), start));
            }
            '+' | '-' | '*' | '/' => {
                out.push((Token::Op(c), start));
                i += 1;
            }
            '(' => {
                out.push((Token::Open, start));
                i += 1;
            }
            ')' => {
                out.push((Token::Close, start));
                i += 1;
            }
            ',' => {
                out.push((Token::Comma, start));
                i += 1;
            }
            other => return Err(error(start, format!("`{other}` is not allowed here"))),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, p)| *p)
    }

    fn expr(&mut self) -> Result<Expr, FormulaError> {
        let mut left = self.term()?;
        while let Some(Token::Op(c @ ('+' | '-'))) = self.peek() {
            let op = if *c == '+' { Op::Add } else { Op::Sub };
            self.at += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, FormulaError> {
        let mut left = self.factor()?;
        while let Some(Token::Op(c @ ('*' | '/'))) = self.peek() {
            let op = if *c == '*' { Op::Mul } else { Op::Div };
            self.at += 1;
            left = Expr::Binary(op, Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Expr, FormulaError> {
        let position = self.position();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(position, format!("nested more than {MAX_DEPTH} deep")));
        }
        let result = match self.tokens.get(self.at).cloned() {
            Some((Token::Number(n), _)) => {
                self.at += 1;
                Ok(Expr::Number(n))
            }
            Some((Token::Op('-'), _)) => {
                self.at += 1;
                Ok(Expr::Neg(Box::new(self.factor()?)))
            }
            Some((Token::Open, _)) => {
                self.at += 1;
                let inner = self.expr()?;
                self.expect_close()?;
                Ok(inner)
            }
            Some((Token::Name(name), _)) => {
                self.at += 1;
                if self.peek() == Some(&Token::Open) {
                    self.call(&name, position)
                } else {
                    Ok(Expr::Name(name, position))
                }
            }
            Some((Token::Close, _)) => Err(error(position, "`)` without a matching `(`")),
            Some(_) => Err(error(position, "a number, a name or `(` is expected here")),
            None => Err(error(position, "the formula ends too soon")),
        };
        self.depth -= 1;
        result
    }

    fn expect_close(&mut self) -> Result<(), FormulaError> {
        match self.peek() {
            Some(Token::Close) => {
                self.at += 1;
                Ok(())
            }
            _ => Err(error(self.position(), "`)` is expected here")),
        }
    }

    fn call(&mut self, name: &str, position: usize) -> Result<Expr, FormulaError> {
        let func = match name {
            "min" => Func::Min,
            "max" => Func::Max,
            "round" => Func::Round,
            other => return Err(error(position, format!("`{other}` is not a function (min, max, round)"))),
        };
        self.at += 1; // (
        let mut args = vec![self.expr()?];
        while self.peek() == Some(&Token::Comma) {
            self.at += 1;
            args.push(self.expr()?);
        }
        self.expect_close()?;
        match (func, args.len()) {
            (Func::Round, 2) => {
                if !matches!(&args[1], Expr::Number(n) if *n >= Decimal::ZERO && *n <= Decimal::from_int(9) && n.round(0) == *n)
                {
                    return Err(error(position, "round(x, places) takes places as a whole number from 0 to 9"));
                }
            }
            (Func::Round, _) => return Err(error(position, "round takes two arguments: round(x, places)")),
            (_, n) if n < 2 => return Err(error(position, format!("{name} takes two or more arguments"))),
            _ => {}
        }
        Ok(Expr::Call(func, args, position))
    }
}

/// Parses a formula, or says where it goes wrong.
pub fn parse(text: &str) -> Result<Expr, FormulaError> {
    if text.chars().count() > MAX_LEN {
        return Err(error(MAX_LEN, format!("a formula is at most {MAX_LEN} characters")));
    }
    let tokens = tokens(text)?;
    let end = text.chars().count();
    let mut parser = Parser { tokens, at: 0, end, depth: 0 };
    let expr = parser.expr()?;
    if parser.at < parser.tokens.len() {
        return Err(error(parser.position(), "an operator is expected here"));
    }
    Ok(expr)
}

/// Every name a formula reads, with where it first appears.
pub fn names(expr: &Expr) -> BTreeMap<String, usize> {
    fn walk(e: &Expr, out: &mut BTreeMap<String, usize>) {
        match e {
            Expr::Number(_) => {}
            Expr::Name(n, p) => {
                out.entry(n.clone()).or_insert(*p);
            }
            Expr::Neg(inner) => walk(inner, out),
            Expr::Binary(_, a, b) => {
                walk(a, out);
                walk(b, out);
            }
            Expr::Call(_, args, _) => args.iter().for_each(|a| walk(a, out)),
        }
    }
    let mut out = BTreeMap::new();
    walk(expr, &mut out);
    out
}

/// Evaluates `expr`, reading names through `value` (every name was checked when saved;
/// one missing now is an error naming it).
pub fn eval(expr: &Expr, value: &dyn Fn(&str) -> Option<Decimal>) -> Result<Decimal, String> {
    let math = |e: MathError| e.to_string();
    Ok(match expr {
        Expr::Number(n) => *n,
        Expr::Name(n, _) => value(n).ok_or_else(|| format!("`{n}` has no value"))?,
        Expr::Neg(inner) => eval(inner, value)?.neg(),
        Expr::Binary(op, a, b) => {
            let (a, b) = (eval(a, value)?, eval(b, value)?);
            match op {
                Op::Add => a.add(b),
                Op::Sub => a.sub(b),
                Op::Mul => a.mul(b),
                Op::Div => a.div(b),
            }
            .map_err(math)?
        }
        Expr::Call(func, args, _) => {
            let values = args.iter().map(|a| eval(a, value)).collect::<Result<Vec<_>, _>>()?;
            match func {
                Func::Min => values.into_iter().min().unwrap_or_default(),
                Func::Max => values.into_iter().max().unwrap_or_default(),
                Func::Round => {
                    let places = values[1].to_minor(0).clamp(0, 9) as u32;
                    values[0].round(places)
                }
            }
        }
    })
}

/// Why a set of formulas cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// `name`'s formula reads `unknown`, at `position`, which is neither a component nor an input.
    Unknown { name: String, unknown: String, position: usize },
    /// Following what each reads comes back: `a → b → a`.
    Cycle(Vec<String>),
}

/// The order to compute `nodes` in (each after everything it reads), given what each reads;
/// names in `inputs` are known up front. Ties are broken by name, so the order is stable.
pub fn order(
    nodes: &BTreeMap<String, BTreeMap<String, usize>>,
    inputs: &BTreeSet<&str>,
) -> Result<Vec<String>, GraphError> {
    for (name, reads) in nodes {
        if let Some((unknown, position)) =
            reads.iter().find(|(r, _)| !nodes.contains_key(*r) && !inputs.contains(r.as_str()))
        {
            return Err(GraphError::Unknown { name: name.clone(), unknown: unknown.clone(), position: *position });
        }
    }
    // Depth-first, remembering the path to name a cycle in order.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        nodes: &BTreeMap<String, BTreeMap<String, usize>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), GraphError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let from = path.iter().position(|p| p == name).unwrap_or(0);
                let mut cycle = path[from..].to_vec();
                cycle.push(name.to_owned());
                return Err(GraphError::Cycle(cycle));
            }
            None => {}
        }
        marks.insert(name.to_owned(), Mark::Visiting);
        path.push(name.to_owned());
        for read in nodes[name].keys().filter(|r| nodes.contains_key(*r)) {
            visit(read, nodes, marks, path, out)?;
        }
        path.pop();
        marks.insert(name.to_owned(), Mark::Done);
        out.push(name.to_owned());
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut out = Vec::with_capacity(nodes.len());
    for name in nodes.keys() {
        visit(name, nodes, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<Decimal, String> {
        let expr = parse(text).map_err(|e| e.to_string())?;
        let vars: BTreeMap<&str, Decimal> = vars.iter().map(|(k, v)| (*k, d(v))).collect();
        eval(&expr, &|n| vars.get(n).copied())
    }

    #[test]
    fn formulas_evaluate_exactly_with_precedence_and_functions() {
        assert_eq!(run("base * 0.05", &[("base", "4166.67")]), Ok(d("208.3335")));
        assert_eq!(run("1 + 2 * 3 - 4 / 8", &[]), Ok(d("6.5")));
        assert_eq!(run("-(1 + 2) * -2", &[]), Ok(d("6")));
        assert_eq!(run("min(gross * 0.08, 500)", &[("gross", "7000")]), Ok(d("500")));
        assert_eq!(run("max(gross * 0.08, 500, 600)", &[("gross", "7000")]), Ok(d("600")));
        assert_eq!(run("round(base / 3, 2)", &[("base", "100")]), Ok(d("33.33")));
        assert_eq!(run("base / (days - days)", &[("base", "1"), ("days", "2")]), Err("division by zero".into()));
    }

    #[test]
    fn errors_point_at_where_the_formula_goes_wrong() {
        let at = |text: &str| parse(text).unwrap_err();
        assert_eq!(at("base * ").position, 7);
        assert_eq!(at("base * ").message, "the formula ends too soon");
        assert_eq!(at("base ** 2").position, 6);
        assert_eq!(at("(base * 2").position, 9);
        assert_eq!(at("base 2").position, 5);
        assert_eq!(at("base * 0.05%").position, 11);
        assert_eq!(at("sqrt(base)").message, "`sqrt` is not a function (min, max, round)");
        assert_eq!(at("round(base, 1.5)").position, 0);
        assert_eq!(at("min(base)").position, 0);
        assert_eq!(at("1.2.3").position, 0);
        assert_eq!(at("Base").position, 0, "names are lower case");
        assert_eq!(at(&"(".repeat(40)).message, "nested more than 32 deep");
        assert!(at(&"1+".repeat(300)).message.contains("at most 500"));
    }

    fn graph(formulas: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, usize>> {
        formulas.iter().map(|(n, f)| (n.to_string(), names(&parse(f).unwrap()))).collect()
    }

    #[test]
    fn components_are_ordered_by_what_they_read_and_cycles_are_named() {
        let inputs = BTreeSet::from(["salary"]);
        let nodes = graph(&[("pension", "base * 0.05"), ("base", "salary / 12"), ("bonus", "base * 0.1 + pension")]);
        assert_eq!(order(&nodes, &inputs).unwrap(), ["base", "pension", "bonus"]);
        let cyclic = graph(&[("a", "b + 1"), ("b", "c * 2"), ("c", "a"), ("d", "salary")]);
        assert_eq!(
            order(&cyclic, &inputs),
            Err(GraphError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()]))
        );
        let unknown = graph(&[("pension", "bsae * 0.05")]);
        assert_eq!(
            order(&unknown, &inputs),
            Err(GraphError::Unknown { name: "pension".into(), unknown: "bsae".into(), position: 0 })
        );
        assert_eq!(order(&graph(&[("a", "a")]), &inputs), Err(GraphError::Cycle(vec!["a".into(), "a".into()])));
    }
}
