//! A shape check for SPDX license expressions (SPDX 2.3, annex D), without the license list:
//! the identifiers are checked for their characters, not looked up, so a new SPDX identifier or a
//! `LicenseRef-...` is accepted.
//!
//! ```text
//! expression := and_expr ("OR" and_expr)*
//! and_expr   := with_expr ("AND" with_expr)*
//! with_expr  := atom ("WITH" identifier)?
//! atom       := identifier | "(" expression ")"
//! identifier := [A-Za-z0-9.+-]+, other than AND, OR, WITH
//! ```
//!
//! Operators are upper case, as SPDX writes them; tokens are separated by spaces.

/// Deepest nesting of parentheses accepted; bounds the recursion on hostile input.
const PARENTHESES_DEPTH_MAX: usize = 16;

/// `Ok` if `text` is a well-formed expression, else why not.
pub(super) fn check_expression(text: &str) -> Result<(), String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        position: 0,
    };
    parser.expression(0)?;
    match parser.tokens.get(parser.position) {
        None => Ok(()),
        Some(token) => Err(format!(
            "unexpected {} in the license expression",
            token.describe()
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Identifier(&'a str),
    And,
    Or,
    With,
    Open,
    Close,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(name) => format!("license {name:?}"),
            Token::And => "AND".to_owned(),
            Token::Or => "OR".to_owned(),
            Token::With => "WITH".to_owned(),
            Token::Open => "\"(\"".to_owned(),
            Token::Close => "\")\"".to_owned(),
        }
    }
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == ' ' {
            rest = &rest[1..];
        } else if c == '(' || c == ')' {
            tokens.push(if c == '(' { Token::Open } else { Token::Close });
            rest = &rest[1..];
        } else if is_identifier_char(c) {
            let end = rest
                .find(|c: char| !is_identifier_char(c))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            tokens.push(match word {
                "AND" => Token::And,
                "OR" => Token::Or,
                "WITH" => Token::With,
                _ => Token::Identifier(word),
            });
            rest = &rest[end..];
        } else {
            return Err(format!("{c:?} is not allowed in a license expression"));
        }
    }
    if tokens.is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(tokens)
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    position: usize,
}

impl Parser<'_, '_> {
    fn next_is(&self, token: &Token<'_>) -> bool {
        self.tokens.get(self.position) == Some(token)
    }

    fn expression(&mut self, depth: usize) -> Result<(), String> {
        self.and_expression(depth)?;
        while self.next_is(&Token::Or) {
            self.position += 1;
            self.and_expression(depth)?;
        }
        Ok(())
    }

    fn and_expression(&mut self, depth: usize) -> Result<(), String> {
        self.with_expression(depth)?;
        while self.next_is(&Token::And) {
            self.position += 1;
            self.with_expression(depth)?;
        }
        Ok(())
    }

    fn with_expression(&mut self, depth: usize) -> Result<(), String> {
        self.atom(depth)?;
        if self.next_is(&Token::With) {
            self.position += 1;
            self.identifier("an exception identifier after WITH")?;
        }
        Ok(())
    }

    fn atom(&mut self, depth: usize) -> Result<(), String> {
        if !self.next_is(&Token::Open) {
            return self.identifier("a license identifier");
        }
        if depth >= PARENTHESES_DEPTH_MAX {
            return Err(format!(
                "nests parentheses deeper than {PARENTHESES_DEPTH_MAX}"
            ));
        }
        self.position += 1;
        self.expression(depth + 1)?;
        if !self.next_is(&Token::Close) {
            return Err("has an unclosed \"(\"".to_owned());
        }
        self.position += 1;
        Ok(())
    }

    fn identifier(&mut self, wanted: &str) -> Result<(), String> {
        match self.tokens.get(self.position) {
            Some(Token::Identifier(_)) => {
                self.position += 1;
                Ok(())
            }
            Some(other) => Err(format!("expected {wanted}, found {}", other.describe())),
            None => Err(format!("expected {wanted} at the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let valid = [
            "MIT",
            "Apache-2.0",
            "GPL-2.0+",
            "LicenseRef-my.license",
            "MIT OR Apache-2.0",
            "(MIT OR Apache-2.0) AND BSD-3-Clause",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
            "((MIT))",
            "MIT AND (Apache-2.0 OR (BSD-2-Clause WITH foo))",
            "  MIT   OR  ISC ",
        ];
        for text in valid {
            assert_eq!(check_expression(text), Ok(()), "{text}");
        }
        let invalid = [
            ("", "must not be blank"),
            ("   ", "must not be blank"),
            ("MIT OR", "expected a license identifier at the end"),
            ("OR MIT", "expected a license identifier, found OR"),
            (
                "MIT Apache-2.0",
                "unexpected license \"Apache-2.0\" in the license expression",
            ),
            (
                "MIT or Apache-2.0",
                "unexpected license \"or\" in the license expression",
            ),
            ("(MIT", "has an unclosed \"(\""),
            ("MIT)", "unexpected \")\" in the license expression"),
            (
                "MIT WITH",
                "expected an exception identifier after WITH at the end",
            ),
            (
                "MIT WITH (X)",
                "expected an exception identifier after WITH, found \"(\"",
            ),
            ("MIT/Apache", "'/' is not allowed in a license expression"),
            ("Proprietäre", "'ä' is not allowed in a license expression"),
        ];
        for (text, message) in invalid {
            assert_eq!(check_expression(text), Err(message.to_owned()), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursing_far() {
        let deep = format!("{}MIT{}", "(".repeat(10_000), ")".repeat(10_000));
        assert_eq!(
            check_expression(&deep),
            Err("nests parentheses deeper than 16".to_owned())
        );
        let fine = format!("{}MIT{}", "(".repeat(16), ")".repeat(16));
        assert_eq!(check_expression(&fine), Ok(()));
    }
}
