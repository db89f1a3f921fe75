//! A small, strict reader of the XML that SVG files are made of, for tests that check charts:
//! elements, attributes and text, with the five predefined entities and character
//! references. It refuses what a browser's XML parser refuses in such files (unbalanced or
//! mismatched tags, a raw `<` or a stray `&` in text or attributes, duplicate attributes), so
//! a chart it reads is well-formed. No DTDs, CDATA or namespaces beyond plain names.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Element {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// This element and every element below it, in document order.
    pub(crate) fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        for child in &self.children {
            if let Node::Element(element) = child {
                out.extend(element.descendants());
            }
        }
        out
    }

    /// The text directly and indirectly inside this element.
    pub(crate) fn text(&self) -> String {
        self.children
            .iter()
            .map(|child| match child {
                Node::Text(text) => text.clone(),
                Node::Element(element) => element.text(),
            })
            .collect()
    }
}

/// Parses a whole document: an optional XML declaration and comments, then one root element.
pub(crate) fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader { text, at: 0 };
    reader.skip_misc()?;
    let root = reader.element()?;
    reader.skip_misc()?;
    if reader.at != text.len() {
        return Err(reader.error("content after the root element"));
    }
    Ok(root)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn error(&self, what: &str) -> String {
        let line = self.text[..self.at].matches('\n').count() + 1;
        let near: String = self.rest().chars().take(40).collect();
        format!("line {line}: {what}, near {near:?}")
    }

    /// Whitespace, comments and `<?...?>` declarations between elements.
    fn skip_misc(&mut self) -> Result<(), String> {
        loop {
            let trimmed = self.rest().trim_start();
            self.at = self.text.len() - trimmed.len();
            if trimmed.starts_with("<!--") {
                self.skip_past("-->")?;
            } else if trimmed.starts_with("<?") {
                self.skip_past("?>")?;
            } else {
                return Ok(());
            }
        }
    }

    fn skip_past(&mut self, end: &str) -> Result<(), String> {
        match self.rest().find(end) {
            Some(offset) => {
                self.at += offset + end.len();
                Ok(())
            }
            None => Err(self.error(&format!("no closing {end}"))),
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let length = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(self.error("expected a name"));
        }
        let name = self.rest()[..length].to_owned();
        self.at += length;
        Ok(name)
    }

    fn skip_space(&mut self) -> bool {
        let trimmed = self.rest().trim_start();
        let skipped = self.rest().len() != trimmed.len();
        self.at = self.text.len() - trimmed.len();
        skipped
    }

    fn element(&mut self) -> Result<Element, String> {
        if !self.rest().starts_with('<') {
            return Err(self.error("expected an element"));
        }
        self.at += 1;
        let name = self.name()?;
        let mut attributes = BTreeMap::new();
        loop {
            let spaced = self.skip_space();
            if self.rest().starts_with("/>") {
                self.at += 2;
                return Ok(Element {
                    name,
                    attributes,
                    children: Vec::new(),
                });
            }
            if self.rest().starts_with('>') {
                self.at += 1;
                break;
            }
            if !spaced {
                return Err(self.error("expected whitespace before an attribute"));
            }
            let key = self.name()?;
            self.skip_space();
            if !self.rest().starts_with('=') {
                return Err(self.error(&format!("attribute {key} has no value")));
            }
            self.at += 1;
            self.skip_space();
            let quote = match self.rest().chars().next() {
                Some(q @ ('"' | '\'')) => q,
                _ => return Err(self.error(&format!("attribute {key} is not quoted"))),
            };
            self.at += 1;
            let Some(end) = self.rest().find(quote) else {
                return Err(self.error(&format!("attribute {key} is not closed")));
            };
            let raw = &self.rest()[..end];
            if raw.contains('<') {
                return Err(self.error(&format!("a raw < in attribute {key}")));
            }
            let value = self.decode(raw)?;
            self.at += end + 1;
            if attributes.insert(key.clone(), value).is_some() {
                return Err(self.error(&format!("attribute {key} given twice")));
            }
        }
        let mut children = Vec::new();
        loop {
            let Some(next) = self.rest().find('<') else {
                return Err(self.error(&format!("<{name}> is never closed")));
            };
            if next > 0 {
                let text = self.decode(&self.rest()[..next])?;
                self.at += next;
                children.push(Node::Text(text));
            }
            if self.rest().starts_with("</") {
                self.at += 2;
                let closing = self.name()?;
                self.skip_space();
                if closing != name || !self.rest().starts_with('>') {
                    return Err(self.error(&format!("</{closing}> closes <{name}>")));
                }
                self.at += 1;
                return Ok(Element {
                    name,
                    attributes,
                    children,
                });
            }
            if self.rest().starts_with("<!--") {
                self.skip_past("-->")?;
                continue;
            }
            children.push(Node::Element(self.element()?));
        }
    }

    /// Replaces entity and character references; a `&` that starts neither is an error.
    fn decode(&self, raw: &str) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            rest = &rest[amp..];
            let Some(semi) = rest.find(';') else {
                return Err(self.error("a & that starts no reference"));
            };
            let reference = &rest[1..semi];
            let decoded = match reference {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => reference
                    .strip_prefix("#x")
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| reference.strip_prefix('#').map(str::parse))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            };
            match decoded {
                Some(c) => out.push(c),
                None => return Err(self.error(&format!("unknown reference &{reference};"))),
            }
            rest = &rest[semi + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
