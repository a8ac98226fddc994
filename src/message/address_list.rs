//! RFC 5322 address lists (`To:`, `Cc:`, `Bcc:`): display names, quoted strings, comments,
//! groups, `<addr>` and bare `addr`, reduced to the addr-specs they name.

/// Why an address list could not be read. The texts name the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressListError {
    /// A `"` without its closing partner.
    #[error("a quoted string is not closed (missing '\"')")]
    UnclosedQuote,
    /// A `(` comment without its closing `)`.
    #[error("a comment is not closed (missing ')')")]
    UnclosedComment,
    /// A `)` without a `(`.
    #[error("')' without a matching '('")]
    StrayParen,
    /// A `[` domain literal without its `]`.
    #[error("a domain literal is not closed (missing ']')")]
    UnclosedLiteral,
    /// A character that cannot appear there (a control character, a lone `\` or `]`).
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A `<` without its `>`.
    #[error("'<' without a matching '>' in {0:?}")]
    UnclosedAngle(String),
    /// A `>` without a `<`.
    #[error("'>' without a matching '<'")]
    StrayAngle,
    /// `<` inside `<...>`.
    #[error("'<' inside '<...>'")]
    NestedAngle,
    /// Text after the closing `>` of an address.
    #[error("unexpected {0:?} after the '>' of an address (separate addresses with ',')")]
    TextAfterAngle(String),
    /// `<>`: the null address names nobody.
    #[error("'<>' is not a recipient")]
    EmptyAngle,
    /// A group inside a group.
    #[error("a group cannot contain another group (\"{0}:\")")]
    NestedGroup(String),
    /// A group without its closing `;`.
    #[error("the group \"{0}\" is not closed with ';'")]
    UnclosedGroup(String),
    /// A `;` outside a group, usually a list separated with `;` instead of `,`.
    #[error("';' outside a group (separate addresses with ',')")]
    SemicolonOutsideGroup,
    /// Something that is not an address, e.g. a name without `<address>`.
    #[error("{0:?} is not an address (a name needs the address in '<...>')")]
    NotAnAddress(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of atext (RFC 5322 §3.2.3, with RFC 6532's UTF-8).
    Word(String),
    /// A quoted string, quotes and escapes kept.
    Quoted(String),
    /// A domain literal, brackets kept.
    Literal(String),
    Dot,
    At,
    Comma,
    Colon,
    Semi,
    LAngle,
    RAngle,
}

impl Tok {
    fn text(&self) -> &str {
        match self {
            Tok::Word(s) | Tok::Quoted(s) | Tok::Literal(s) => s,
            Tok::Dot => ".",
            Tok::At => "@",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Semi => ";",
            Tok::LAngle => "<",
            Tok::RAngle => ">",
        }
    }

    fn is_word(&self) -> bool {
        matches!(self, Tok::Word(_) | Tok::Quoted(_))
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// Splits the (unfolded) text into tokens, dropping white space and comments.
fn tokenize(text: &str) -> Result<Vec<Tok>, AddressListError> {
    let mut toks = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let tok = match c {
            ' ' | '\t' | '\r' | '\n' => continue,
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        None => return Err(AddressListError::UnclosedComment),
                        Some((_, '\\')) => {
                            chars.next();
                        }
                        Some((_, '(')) => depth += 1,
                        Some((_, ')')) => depth -= 1,
                        Some(_) => {}
                    }
                }
                continue;
            }
            ')' => return Err(AddressListError::StrayParen),
            '"' => {
                let end = loop {
                    match chars.next() {
                        None => return Err(AddressListError::UnclosedQuote),
                        Some((_, '\\')) => {
                            chars.next();
                        }
                        Some((i, '"')) => break i + 1,
                        Some(_) => {}
                    }
                };
                Tok::Quoted(text[start..end].to_string())
            }
            '[' => {
                let end = loop {
                    match chars.next() {
                        None => return Err(AddressListError::UnclosedLiteral),
                        Some((_, '\\')) => {
                            chars.next();
                        }
                        Some((i, ']')) => break i + 1,
                        Some(_) => {}
                    }
                };
                Tok::Literal(text[start..end].to_string())
            }
            '.' => Tok::Dot,
            '@' => Tok::At,
            ',' => Tok::Comma,
            ':' => Tok::Colon,
            ';' => Tok::Semi,
            '<' => Tok::LAngle,
            '>' => Tok::RAngle,
            c if is_atext(c) => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if !is_atext(n) {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                }
                Tok::Word(text[start..end].to_string())
            }
            other => return Err(AddressListError::UnexpectedChar(other)),
        };
        toks.push(tok);
    }
    Ok(toks)
}

fn joined(toks: &[Tok], sep: &str) -> String {
    toks.iter().map(Tok::text).collect::<Vec<_>>().join(sep)
}

/// Reads an address list and returns the addr-spec of every mailbox in it, in order:
/// `local@domain` with comments and white space removed and quoted local parts kept, or a
/// bare `local` when no domain was written (sendmail qualifies those with the host name).
/// Groups (`team: a@x, b@y;`, `undisclosed-recipients:;`) give their members; empty list
/// elements (`a@x,,b@y`, obsolete syntax) are skipped; a source route (`<@relay:u@x>`) is
/// dropped as RFC 5321 says.
///
/// ```
/// use postrider::message::parse_address_list;
/// let list = r#""Doe, John" <john@example.com> (work), team: ann@x.example, bob;, undisclosed-recipients:;"#;
/// assert_eq!(parse_address_list(list)?, ["john@example.com", "ann@x.example", "bob"]);
/// # Ok::<(), postrider::message::AddressListError>(())
/// ```
pub fn parse_address_list(text: &str) -> Result<Vec<String>, AddressListError> {
    let toks = tokenize(text)?;
    let mut out = Vec::new();
    let mut group: Option<String> = None;
    let mut i = 0;
    loop {
        let mut start = i;
        let mut angle = false;
        while i < toks.len() {
            match &toks[i] {
                Tok::LAngle if angle => return Err(AddressListError::NestedAngle),
                Tok::LAngle => angle = true,
                Tok::RAngle if !angle => return Err(AddressListError::StrayAngle),
                Tok::RAngle => angle = false,
                Tok::Comma | Tok::Semi if !angle => break,
                Tok::Colon if !angle => {
                    let name = joined(&toks[start..i], " ");
                    if group.is_some() {
                        return Err(AddressListError::NestedGroup(name));
                    }
                    if toks[start..i].iter().any(|t| matches!(t, Tok::At)) {
                        return Err(AddressListError::NotAnAddress(joined(&toks[start..=i], "")));
                    }
                    group = Some(name);
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        if angle {
            return Err(AddressListError::UnclosedAngle(joined(&toks[start..], " ")));
        }
        if start < i {
            out.push(mailbox(&toks[start..i])?);
        }
        match toks.get(i) {
            None => {
                if let Some(name) = group {
                    return Err(AddressListError::UnclosedGroup(name));
                }
                return Ok(out);
            }
            Some(Tok::Semi) => {
                if group.take().is_none() {
                    return Err(AddressListError::SemicolonOutsideGroup);
                }
            }
            Some(_) => {} // a comma
        }
        i += 1;
    }
}

/// One mailbox: `[display name] <[route:]addr-spec>` or a bare addr-spec.
fn mailbox(item: &[Tok]) -> Result<String, AddressListError> {
    let Some(open) = item.iter().position(|t| *t == Tok::LAngle) else {
        return addr_spec(item);
    };
    // Balanced by the caller: there is exactly one `>` after the `<`.
    let close = item
        .iter()
        .rposition(|t| *t == Tok::RAngle)
        .filter(|&c| c > open)
        .ok_or_else(|| AddressListError::UnclosedAngle(joined(item, " ")))?;
    if close + 1 < item.len() {
        return Err(AddressListError::TextAfterAngle(joined(
            &item[close + 1..],
            " ",
        )));
    }
    let mut inner = &item[open + 1..close];
    if let Some(colon) = inner.iter().rposition(|t| *t == Tok::Colon) {
        inner = &inner[colon + 1..];
    }
    if inner.is_empty() {
        return Err(AddressListError::EmptyAngle);
    }
    addr_spec(inner)
}

/// `local[@domain]`: words separated by dots, then a dotted domain or a domain literal.
fn addr_spec(toks: &[Tok]) -> Result<String, AddressListError> {
    let not_an_address = || AddressListError::NotAnAddress(joined(toks, " "));
    let (local, domain) = match toks.iter().position(|t| *t == Tok::At) {
        Some(at) => (&toks[..at], Some(&toks[at + 1..])),
        None => (toks, None),
    };
    let dotted = |part: &[Tok], word: fn(&Tok) -> bool| {
        !part.is_empty()
            && part.iter().enumerate().all(
                |(n, t)| {
                    if n % 2 == 0 { word(t) } else { *t == Tok::Dot }
                },
            )
            && part.len() % 2 == 1
    };
    // Obsolete syntax allows `a..b` and a trailing dot in local parts; Address::parse judges
    // those. Two words without a dot between them are a name, not an address.
    let local_ok = !local.is_empty()
        && local[0].is_word()
        && local
            .windows(2)
            .all(|w| !(w[0].is_word() && w[1].is_word()))
        && local.iter().all(|t| t.is_word() || *t == Tok::Dot);
    if !local_ok {
        return Err(not_an_address());
    }
    let mut spec = joined(local, "");
    if let Some(domain) = domain {
        let literal = matches!(domain, [Tok::Literal(_)]);
        // `user@example.com.` (a fully qualified name with its root dot) is common enough.
        let name = domain.strip_suffix(&[Tok::Dot]).unwrap_or(domain);
        if !literal && !dotted(name, |t| matches!(t, Tok::Word(_))) {
            return Err(not_an_address());
        }
        spec.push('@');
        spec.push_str(&joined(domain, ""));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<String> {
        parse_address_list(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn plain_and_angle_addresses_with_display_names() {
        assert_eq!(
            ok("a@example.com, Bob <b@example.com>, \"Smith, Carol\" <c@example.com>"),
            ["a@example.com", "b@example.com", "c@example.com"]
        );
    }

    #[test]
    fn comments_and_white_space_are_ignored_even_inside_addresses() {
        assert_eq!(
            ok("(boss) john . doe (x) @ (y) example . com (nested (comment) here)"),
            ["john.doe@example.com"]
        );
        assert_eq!(ok("<a@b.example> (\\) escaped paren)"), ["a@b.example"]);
    }

    #[test]
    fn quoted_local_parts_are_kept_quoted() {
        assert_eq!(
            ok(r#""john doe"@example.com, "a\"b"@example.com"#),
            [r#""john doe"@example.com"#, r#""a\"b"@example.com"#]
        );
    }

    #[test]
    fn groups_give_their_members_and_empty_groups_give_none() {
        assert_eq!(ok("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            ok("team: a@x.example, B <b@x.example>;, c@y.example"),
            ["a@x.example", "b@x.example", "c@y.example"]
        );
    }

    #[test]
    fn bare_local_names_have_no_domain() {
        assert_eq!(ok("root, <postmaster>"), ["root", "postmaster"]);
    }

    #[test]
    fn empty_elements_and_routes_are_skipped() {
        assert_eq!(ok(""), Vec::<String>::new());
        assert_eq!(ok(" , a@x.example,, ,"), ["a@x.example"]);
        assert_eq!(
            ok("<@relay.example,@r2.example:u@x.example>"),
            ["u@x.example"]
        );
    }

    #[test]
    fn domain_literals_and_root_dots_are_passed_through() {
        assert_eq!(ok("u@[192.0.2.1]"), ["u@[192.0.2.1]"]);
        assert_eq!(ok("u@example.com."), ["u@example.com."]);
    }

    #[test]
    fn utf8_addresses_are_accepted() {
        assert_eq!(ok("Jörg <jörg@bücher.example>"), ["jörg@bücher.example"]);
    }

    #[test]
    fn malformed_lists_say_what_is_wrong() {
        use AddressListError::*;
        let cases: &[(&str, AddressListError)] = &[
            ("\"unclosed@x.example", UnclosedQuote),
            ("a@x.example (unclosed", UnclosedComment),
            ("a@x.example)", StrayParen),
            ("a@[1.2.3.4", UnclosedLiteral),
            (
                "Bob <b@x.example",
                UnclosedAngle("Bob < b @ x . example".into()),
            ),
            ("b@x.example>", StrayAngle),
            ("<<b@x.example>>", NestedAngle),
            (
                "<b@x.example> c@x.example",
                TextAfterAngle("c @ x . example".into()),
            ),
            ("<>", EmptyAngle),
            ("a: b: c@x.example;;", NestedGroup("b".into())),
            ("team: a@x.example", UnclosedGroup("team".into())),
            ("a@x.example; b@x.example", SemicolonOutsideGroup),
            ("John Smith", NotAnAddress("John Smith".into())),
            ("a@b@c.example", NotAnAddress("a @ b @ c . example".into())),
            ("a@", NotAnAddress("a @".into())),
            ("a\\b@x.example", UnexpectedChar('\\')),
            ("a\u{1}@x.example", UnexpectedChar('\u{1}')),
        ];
        for (text, want) in cases {
            assert_eq!(parse_address_list(text).as_ref(), Err(want), "{text:?}");
        }
        assert_eq!(
            SemicolonOutsideGroup.to_string(),
            "';' outside a group (separate addresses with ',')"
        );
    }
}
