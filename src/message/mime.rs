//! The two MIME header fields a transfer agent must understand to re-encode a message:
//! `Content-Type` (RFC 2045 §5, RFC 2046) and `Content-Transfer-Encoding` (RFC 2045 §6).
//!
//! Both parsers are lenient, as mail readers are: a field that cannot be read is treated as
//! absent, which RFC 2045 §5.2 turns into the default (`text/plain`, `7bit`).

/// A media type with its parameters, names lower-cased.
///
/// ```
/// use postrider::message::ContentType;
/// let ct = ContentType::parse(br#"Multipart/Mixed; boundary="=_a b"; (comment) charset=x"#).unwrap();
/// assert_eq!((ct.kind.as_str(), ct.subtype.as_str()), ("multipart", "mixed"));
/// assert_eq!(ct.param("BOUNDARY"), Some("=_a b"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `text`, `multipart`, `message`, ... (lower case).
    pub kind: String,
    /// `plain`, `mixed`, `rfc822`, ... (lower case).
    pub subtype: String,
    /// Parameters in order: names lower-cased, values as written (quotes and escapes removed).
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// RFC 2045 §5.2's default: `text/plain; charset=us-ascii`.
    pub fn default_text() -> ContentType {
        ContentType {
            kind: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    /// The default inside a `multipart/digest` (RFC 2046 §5.1.5).
    pub fn default_digest_part() -> ContentType {
        ContentType {
            kind: "message".into(),
            subtype: "rfc822".into(),
            params: Vec::new(),
        }
    }

    /// Parses an unfolded field value; `None` when there is no `type/subtype`.
    pub fn parse(value: &[u8]) -> Option<ContentType> {
        let mut t = Tokens::new(value);
        let kind = t.token()?;
        t.skip_cfws();
        if !t.eat(b'/') {
            return None;
        }
        let subtype = t.token()?;
        let mut params = Vec::new();
        loop {
            t.skip_cfws();
            if t.at_end() {
                break;
            }
            if !t.eat(b';') {
                // Junk after the type: keep what was read, as readers do.
                break;
            }
            t.skip_cfws();
            if t.at_end() {
                break;
            }
            let Some(name) = t.token() else { break };
            t.skip_cfws();
            if !t.eat(b'=') {
                break;
            }
            t.skip_cfws();
            let Some(value) = t.quoted_string().or_else(|| t.token()) else {
                break;
            };
            params.push((name.to_ascii_lowercase(), value));
        }
        Some(ContentType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params,
        })
    }

    /// The first parameter named `name` (case-insensitively).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.kind == "multipart"
    }

    /// True for `message/rfc822` (and `message/global`'s 7-bit cousin only).
    pub fn is_message(&self) -> bool {
        self.kind == "message" && self.subtype == "rfc822"
    }

    /// True for `text/*`.
    pub fn is_text(&self) -> bool {
        self.kind == "text"
    }
}

/// A `Content-Transfer-Encoding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEncoding {
    /// `7bit`, the default.
    SevenBit,
    /// `8bit`.
    EightBit,
    /// `binary`.
    Binary,
    /// `quoted-printable`.
    QuotedPrintable,
    /// `base64`.
    Base64,
    /// Anything else (`x-uuencode`), lower-cased.
    Other(String),
}

impl TransferEncoding {
    /// Parses an unfolded field value (case-insensitive, comments allowed); an empty value is
    /// the default `7bit`.
    pub fn parse(value: &[u8]) -> TransferEncoding {
        let mut t = Tokens::new(value);
        let Some(word) = t.token() else {
            return TransferEncoding::SevenBit;
        };
        match word.to_ascii_lowercase().as_str() {
            "7bit" => TransferEncoding::SevenBit,
            "8bit" => TransferEncoding::EightBit,
            "binary" => TransferEncoding::Binary,
            "quoted-printable" => TransferEncoding::QuotedPrintable,
            "base64" => TransferEncoding::Base64,
            other => TransferEncoding::Other(other.to_string()),
        }
    }

    /// True for the encodings that leave the octets as they are (`7bit`, `8bit`, `binary`)
    /// and for unknown ones, whose octets this agent cannot re-encode without changing them.
    pub fn is_identity(&self) -> bool {
        !matches!(
            self,
            TransferEncoding::QuotedPrintable | TransferEncoding::Base64
        )
    }
}

/// A cursor over a structured field value (RFC 5322 §3.2 tokens, quoted strings, comments).
struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Tokens<'a> {
        let mut t = Tokens { s, i: 0 };
        t.skip_cfws();
        t
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// White space, line breaks and (nested) comments.
    fn skip_cfws(&mut self) {
        while let Some(&b) = self.s.get(self.i) {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    while let Some(&c) = self.s.get(self.i) {
                        self.i += 1;
                        match c {
                            b'\\' => self.i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// An RFC 2045 token: printable ASCII without specials; non-ASCII octets are taken too
    /// (lenient about raw UTF-8 in parameter values).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(&b) = self.s.get(self.i) {
            if b <= b' ' || b == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&b) {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted_string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(&c) = self.s.get(self.i) {
                        out.push(c);
                        self.i += 1;
                    }
                }
                b'\r' | b'\n' => {}
                c => out.push(c),
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_read_with_quoted_parameters_and_comments() {
        let ct =
            ContentType::parse(b"text/plain (body) ; charset = \"utf-8\" ; format=flowed").unwrap();
        assert!(ct.is_text());
        assert_eq!(ct.param("charset"), Some("utf-8"));
        assert_eq!(ct.param("Format"), Some("flowed"));
        let ct = ContentType::parse(b"multipart/alternative;\r\n boundary=\"a\\\"b\"").unwrap();
        assert!(ct.is_multipart());
        assert_eq!(ct.param("boundary"), Some("a\"b"));
    }

    #[test]
    fn a_value_without_a_subtype_is_no_content_type() {
        assert_eq!(ContentType::parse(b"text"), None);
        assert_eq!(ContentType::parse(b""), None);
        assert_eq!(ContentType::parse(b"/plain"), None);
        // Junk after the parameters keeps what was read.
        let ct = ContentType::parse(b"text/html; charset=x junk").unwrap();
        assert_eq!(ct.param("charset"), Some("x"));
    }

    #[test]
    fn transfer_encodings_are_case_insensitive_and_default_to_7bit() {
        assert_eq!(
            TransferEncoding::parse(b" Quoted-Printable "),
            TransferEncoding::QuotedPrintable
        );
        assert_eq!(TransferEncoding::parse(b"BASE64"), TransferEncoding::Base64);
        assert_eq!(
            TransferEncoding::parse(b"8bit (raw)"),
            TransferEncoding::EightBit
        );
        assert_eq!(TransferEncoding::parse(b""), TransferEncoding::SevenBit);
        assert_eq!(
            TransferEncoding::parse(b"x-uuencode"),
            TransferEncoding::Other("x-uuencode".into())
        );
        assert!(TransferEncoding::Binary.is_identity());
        assert!(!TransferEncoding::Base64.is_identity());
    }

    #[test]
    fn an_unclosed_comment_or_quote_ends_the_value_without_panicking() {
        assert_eq!(ContentType::parse(b"(text/plain"), None);
        let ct = ContentType::parse(b"text/plain; name=\"abc").unwrap();
        assert_eq!(ct.param("name"), Some("abc"));
        let _ = ContentType::parse(b"a/b; c=(\\");
    }
}
