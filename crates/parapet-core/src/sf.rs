//! The small part of RFC 8941 structured-field lists that the rate-limit
//! fields need: a list of items with parameters. Inner lists are not used by
//! those fields and make a member unreadable; any syntax error makes the whole
//! field unreadable, as RFC 8941 requires.
//!
//! A field is also unreadable past fixed bounds ([`MAX_FIELD_LEN`],
//! [`MAX_MEMBERS`], [`MAX_PARAMS`]): a server's rate-limit field is a few
//! policies of a few parameters, and bounding it keeps the work per response
//! small and linear in its length, whatever the server sends.

/// The longest field value read, in bytes (all of a field's lines together,
/// counting the `", "` that joins them); a longer one is malformed.
pub(crate) const MAX_FIELD_LEN: usize = 4096;

/// The most list members a field may have; more make it malformed.
pub(crate) const MAX_MEMBERS: usize = 32;

/// The most parameters a member may have (each `;`, repeated keys
/// included); more make the field malformed.
pub(crate) const MAX_PARAMS: usize = 32;

/// A bare item of a structured field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bare {
    Integer(i64),
    Decimal(f64),
    String(String),
    Token(String),
    Bytes,
    Bool(bool),
}

/// A list member: an item with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub(crate) value: Bare,
    pub(crate) params: Vec<(String, Bare)>,
}

impl Item {
    pub(crate) fn param(&self, key: &str) -> Option<&Bare> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A non-negative integer parameter.
    pub(crate) fn uint(&self, key: &str) -> Option<u64> {
        match self.param(key)? {
            Bare::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// Parses a list; `None` when the field is malformed or out of bounds.
/// Linear in the length of `input`.
pub(crate) fn parse_list(input: &[u8]) -> Option<Vec<Item>> {
    if input.len() > MAX_FIELD_LEN {
        return None;
    }
    let mut p = Parser { b: input, i: 0 };
    p.skip_sp();
    let mut items = Vec::new();
    if p.peek().is_none() {
        return Some(items);
    }
    loop {
        if items.len() == MAX_MEMBERS {
            return None;
        }
        items.push(p.item()?);
        p.skip_ows();
        match p.peek() {
            None => return Some(items),
            Some(b',') => {
                p.i += 1;
                p.skip_ows();
                p.peek()?; // a trailing comma is an error
            }
            Some(_) => return None,
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn item(&mut self) -> Option<Item> {
        let value = self.bare()?;
        let mut params = Vec::new();
        let mut count = 0;
        while self.peek() == Some(b';') {
            // NOTE: the bound also keeps the search for a repeated key
            // below constant work per parameter.
            if count == MAX_PARAMS {
                return None;
            }
            count += 1;
            self.i += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare()?
            } else {
                Bare::Bool(true)
            };
            if let Some(slot) = params.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else {
                params.push((key, value));
            }
        }
        Some(Item { value, params })
    }

    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.i += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        Some(String::from_utf8_lossy(self.b.get(start..self.i)?).into_owned())
    }

    fn bare(&mut self) -> Option<Bare> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.bytes(),
            b'?' => self.boolean(),
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => self.token(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Bare> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let int_len = self.i - int_start;
        if int_len == 0 {
            return None;
        }
        if self.peek() == Some(b'.') {
            if int_len > 12 {
                return None;
            }
            self.i += 1;
            let frac_start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let frac_len = self.i - frac_start;
            if frac_len == 0 || frac_len > 3 {
                return None;
            }
            let text = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
            return text.parse().ok().map(Bare::Decimal);
        }
        if int_len > 15 {
            return None;
        }
        let text = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
        text.parse().ok().map(Bare::Integer)
    }

    fn string(&mut self) -> Option<Bare> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(Bare::String(out)),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    if e != b'"' && e != b'\\' {
                        return None;
                    }
                    out.push(char::from(e));
                }
                0x20..=0x7e => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    fn token(&mut self) -> Option<Bare> {
        let start = self.i;
        self.i += 1;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Some(Bare::Token(
            String::from_utf8_lossy(self.b.get(start..self.i)?).into_owned(),
        ))
    }

    fn bytes(&mut self) -> Option<Bare> {
        self.i += 1;
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b':' => return Some(Bare::Bytes),
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {}
                _ => return None,
            }
        }
    }

    fn boolean(&mut self) -> Option<Bare> {
        self.i += 1;
        let v = match self.peek()? {
            b'0' => false,
            b'1' => true,
            _ => return None,
        };
        self.i += 1;
        Some(Bare::Bool(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_policy_lists() {
        let items =
            parse_list(br#""burst";q=100;w=60, "day";q=1000;w=86400;qu="requests""#).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].value, Bare::String("burst".into()));
        assert_eq!(items[0].uint("q"), Some(100));
        assert_eq!(items[1].uint("w"), Some(86_400));
        assert_eq!(items[1].param("qu"), Some(&Bare::String("requests".into())));
    }

    #[test]
    fn parses_tokens_bytes_booleans_decimals() {
        let items = parse_list(b"default;r=5;t=1.5;pk=:cHJvamVjdDEyMw==:;flag, x;y=?0").unwrap();
        assert_eq!(items[0].value, Bare::Token("default".into()));
        assert_eq!(items[0].param("t"), Some(&Bare::Decimal(1.5)));
        assert_eq!(items[0].param("pk"), Some(&Bare::Bytes));
        assert_eq!(items[0].param("flag"), Some(&Bare::Bool(true)));
        assert_eq!(items[1].param("y"), Some(&Bare::Bool(false)));
    }

    #[test]
    fn negative_integers_are_not_uints() {
        let items = parse_list(b"\"p\";r=-1").unwrap();
        assert_eq!(items[0].uint("r"), None);
    }

    #[test]
    fn malformed_fields_are_rejected() {
        for bad in [
            &b"\"a\";r=1,"[..],
            b"\"a\";R=1",
            b"\"unterminated",
            b"(inner list)",
            b"\"a\" junk",
            b"\"a\";r=1234567890123456",
            b"\"a\";r=",
            b"\"a\";t=1.2345",
            b"\"\xff\"",
        ] {
            assert_eq!(parse_list(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A list of `members` members, each with `params` parameters.
    fn field(members: usize, params: usize) -> String {
        let member = |m: usize| {
            let mut s = format!("p{m}");
            for i in 0..params {
                s.push_str(&format!(";k{i}=1"));
            }
            s
        };
        (0..members).map(member).collect::<Vec<_>>().join(", ")
    }

    #[test]
    fn members_are_bounded() {
        let at = parse_list(field(MAX_MEMBERS, 1).as_bytes()).unwrap();
        assert_eq!(at.len(), MAX_MEMBERS);
        assert_eq!(parse_list(field(MAX_MEMBERS + 1, 1).as_bytes()), None);
    }

    #[test]
    fn parameters_are_bounded_repeated_keys_included() {
        let at = parse_list(field(1, MAX_PARAMS).as_bytes()).unwrap();
        assert_eq!(at[0].params.len(), MAX_PARAMS);
        assert_eq!(parse_list(field(1, MAX_PARAMS + 1).as_bytes()), None);
        let repeated = format!("p{}", ";r=1".repeat(MAX_PARAMS + 1));
        assert_eq!(parse_list(repeated.as_bytes()), None);
    }

    #[test]
    fn field_length_is_bounded() {
        // One member whose string fills the field to the byte.
        let fill = |len: usize| format!("\"{}\";r=1", "x".repeat(len - 6));
        let at = fill(MAX_FIELD_LEN);
        assert_eq!(at.len(), MAX_FIELD_LEN);
        assert_eq!(parse_list(at.as_bytes()).unwrap()[0].uint("r"), Some(1));
        assert_eq!(parse_list(fill(MAX_FIELD_LEN + 1).as_bytes()), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_list(&b);
        }
    }
}
