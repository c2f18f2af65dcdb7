//! Stream header and footer XML: parsing into typed views, rendering for the writer.

use std::fmt::Write as _;
use std::ops::Range;

use quick_xml::events::Event;

use super::{ChannelFormat, ClockOffset, HeaderError};

/// Largest XML chunk the reader accepts; a corrupt length cannot make it allocate more.
pub const MAX_XML_BYTES: u64 = 64 << 20;

/// Most channels a stream header may declare; bounds what one sample can allocate.
pub const MAX_CHANNELS: usize = 1 << 20;

/// A parsed XML element: tag name, its own text, child elements, and where it sits in
/// the parsed text (so a caller can rewrite one element in place).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Element {
    pub name: String,
    /// Its own text (not its children's), entities resolved.
    pub text: String,
    pub children: Vec<Element>,
    /// Bytes of the whole element, from `<` of its start tag to `>` of its end tag.
    pub span: Range<usize>,
    /// Bytes of its content between the tags; `None` for an empty element `<x/>`.
    pub inner: Option<Range<usize>>,
}

impl Element {
    /// Parses a document and returns its root element.
    pub fn parse(xml: &str) -> Result<Element, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let before = reader.buffer_position() as usize;
            let event = reader
                .read_event()
                .map_err(|e| format!("{e} near byte {}", reader.buffer_position()))?;
            let after = reader.buffer_position() as usize;
            match event {
                Event::Start(start) => {
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    stack.push(Element {
                        name,
                        span: before..after,
                        inner: Some(after..after),
                        ..Element::default()
                    });
                }
                Event::Empty(start) => {
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    close(
                        &mut stack,
                        &mut root,
                        Element {
                            name,
                            span: before..after,
                            ..Element::default()
                        },
                    )?;
                }
                Event::End(_) => {
                    let mut done = stack.pop().ok_or("end tag without a start tag")?;
                    done.span.end = after;
                    if let Some(inner) = &mut done.inner {
                        inner.end = before;
                    }
                    close(&mut stack, &mut root, done)?;
                }
                Event::Text(text) => {
                    let text = text.xml10_content().map_err(|e| e.to_string())?;
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&text);
                    }
                }
                Event::CData(data) => {
                    let data = data.decode().map_err(|e| e.to_string())?;
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&data);
                    }
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(ch) => ch.to_string(),
                        None => {
                            let name = reference.decode().map_err(|e| e.to_string())?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| format!("unknown entity &{name};"))?
                                .to_string()
                        }
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&resolved);
                    }
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        if let Some(open) = stack.last() {
            return Err(format!("<{}> is never closed", open.name));
        }
        root.ok_or_else(|| "no root element".to_string())
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at a path of child names below this one.
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The first element in document order at a path of names starting with this
    /// one's (e.g. `["info", "desc"]` on the root): unlike [`Element::at`], a first
    /// `<desc>` without the rest of the path does not hide a later one that has it.
    pub fn find(&self, path: &[&str]) -> Option<&Element> {
        let (first, rest) = path.split_first()?;
        if self.name != *first {
            return None;
        }
        if rest.is_empty() {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(rest))
    }
}

fn close(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(format!("second root element <{}>", element.name)),
    }
    Ok(())
}

/// Appends `<tag>value</tag>` (`&<>"'` in the value escaped) on a line of its own,
/// `depth` tabs in.
fn elem(x: &mut String, depth: usize, tag: &str, value: &str) {
    let value = quick_xml::escape::escape(value);
    let _ = writeln!(x, "{}<{tag}>{value}</{tag}>", "\t".repeat(depth));
}

/// The `<tag>` text of every `<desc><channels><channel>` under `root`, in order (""
/// where a channel lacks it); empty when the header lists no channels.
fn channel_texts(root: &Element, tag: &str) -> Vec<String> {
    root.at(&["desc", "channels"])
        .map(|channels| {
            channels
                .children
                .iter()
                .filter(|c| c.name == "channel")
                .map(|c| c.child(tag).map_or(String::new(), |e| e.text.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A stream's header: the fields a reader needs, parsed once, and the XML as written.
///
/// Built from a file's XML with [`StreamInfo::from_xml`] (the XML is kept verbatim) or
/// from a [`StreamSpec`] (the XML is rendered from it).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamInfo {
    name: String,
    content_type: String,
    channel_count: usize,
    nominal_srate: f64,
    channel_format: ChannelFormat,
    source_id: String,
    channel_labels: Vec<String>,
    can_drop_samples: bool,
    xml: String,
}

impl StreamInfo {
    /// Parses a StreamHeader's XML. `channel_count`, `nominal_srate` and
    /// `channel_format` are required; `name`, `type` and `source_id` default to "".
    pub fn from_xml(xml: &str) -> Result<StreamInfo, HeaderError> {
        let root = Element::parse(xml).map_err(HeaderError::Xml)?;
        let field = |name: &'static str| root.child(name).map(|e| e.text.as_str());
        let required = |name: &'static str| field(name).ok_or(HeaderError::Missing(name));

        let count_text = required("channel_count")?;
        let channel_count = count_text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= MAX_CHANNELS)
            .ok_or_else(|| HeaderError::BadValue {
                field: "channel_count",
                value: count_text.to_string(),
                expected: "a whole number up to 1048576",
            })?;
        let srate_text = required("nominal_srate")?;
        let nominal_srate = srate_text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| HeaderError::BadValue {
                field: "nominal_srate",
                value: srate_text.to_string(),
                expected: "a rate in Hz (0 for irregular streams)",
            })?;
        let format_text = required("channel_format")?;
        let channel_format = ChannelFormat::parse(format_text)
            .ok_or_else(|| HeaderError::UnknownFormat(format_text.to_string()))?;

        let channel_labels = channel_texts(&root, "label");
        let can_drop_samples = root
            .at(&["desc", "synchronization", "can_drop_samples"])
            .is_some_and(|e| e.text.trim().eq_ignore_ascii_case("true"));

        Ok(StreamInfo {
            name: field("name").unwrap_or_default().to_string(),
            content_type: field("type").unwrap_or_default().to_string(),
            channel_count,
            nominal_srate,
            channel_format,
            source_id: field("source_id").unwrap_or_default().to_string(),
            channel_labels,
            can_drop_samples,
            xml: xml.to_string(),
        })
    }

    /// `<name>`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `<type>`, e.g. `MUA`, `Markers`, `EEG`.
    pub fn content_type(&self) -> &str {
        &self.content_type
    }
    /// `<channel_count>`.
    pub fn channel_count(&self) -> usize {
        self.channel_count
    }
    /// `<nominal_srate>` in Hz; 0 for irregular streams such as markers.
    pub fn nominal_srate(&self) -> f64 {
        self.nominal_srate
    }
    /// `<channel_format>`.
    pub fn channel_format(&self) -> ChannelFormat {
        self.channel_format
    }
    /// `<source_id>`, "" when absent.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }
    /// `<desc><channels><channel><label>` of each channel, in order ("" for a channel
    /// without a label); empty when the header lists no channels.
    pub fn channel_labels(&self) -> &[String] {
        &self.channel_labels
    }
    /// `<desc><synchronization><can_drop_samples>` is `true` (pyxdf then skips dejittering).
    pub fn can_drop_samples(&self) -> bool {
        self.can_drop_samples
    }
    /// The header XML.
    pub fn xml(&self) -> &str {
        &self.xml
    }

    /// Text of any top-level `<info>` field, e.g. `created_at`, `uid`, `hostname`;
    /// `None` if absent. Parses the XML on each call.
    pub fn field(&self, name: &str) -> Option<String> {
        Element::parse(&self.xml)
            .ok()?
            .child(name)
            .map(|e| e.text.clone())
    }

    /// Text of the element at `path` under `<desc>` (elements joined by `/`, e.g.
    /// `stimuli/directory`); `None` if absent. Parses the XML on each call.
    pub fn desc_text(&self, path: &str) -> Option<String> {
        let root = Element::parse(&self.xml).ok()?;
        let mut at = vec!["desc"];
        at.extend(path.split('/'));
        root.at(&at).map(|e| e.text.clone())
    }

    /// The `<tag>` of every `<desc><channels><channel>`, in order ("" where a channel
    /// lacks it); empty when the header lists no channels.
    pub fn channel_field(&self, tag: &str) -> Vec<String> {
        Element::parse(&self.xml).map_or_else(|_| Vec::new(), |root| channel_texts(&root, tag))
    }
}

/// A new stream's header for [`XdfWriter::add_stream`](super::XdfWriter::add_stream).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSpec {
    pub name: String,
    pub content_type: String,
    pub channel_count: usize,
    pub nominal_srate: f64,
    pub channel_format: ChannelFormat,
    pub source_id: String,
    /// One label per channel, or empty for none.
    pub channel_labels: Vec<String>,
    /// More fields per channel written beside its label, e.g. `("area", "V1")`; empty,
    /// or one list per label.
    pub channel_fields: Vec<Vec<(String, String)>>,
    /// More `<desc>` content: `(path, text)` pairs, the path's elements nested, e.g.
    /// `("stimuli/directory", "images")` → `<stimuli><directory>images</directory></stimuli>`.
    /// Consecutive pairs that share a first element share it in the XML.
    pub desc_fields: Vec<(String, String)>,
}

impl StreamSpec {
    /// A stream without source id or channel labels.
    pub fn new(
        name: &str,
        content_type: &str,
        channel_count: usize,
        nominal_srate: f64,
        channel_format: ChannelFormat,
    ) -> StreamSpec {
        StreamSpec {
            name: name.to_string(),
            content_type: content_type.to_string(),
            channel_count,
            nominal_srate,
            channel_format,
            source_id: String::new(),
            channel_labels: Vec::new(),
            channel_fields: Vec::new(),
            desc_fields: Vec::new(),
        }
    }

    /// Renders the header XML in LabRecorder's layout.
    pub fn to_xml(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\"?>\n<info>\n");
        elem(&mut x, 1, "name", &self.name);
        elem(&mut x, 1, "type", &self.content_type);
        elem(&mut x, 1, "channel_count", &self.channel_count.to_string());
        elem(&mut x, 1, "nominal_srate", &self.nominal_srate.to_string());
        elem(&mut x, 1, "channel_format", self.channel_format.as_str());
        elem(&mut x, 1, "source_id", &self.source_id);
        if self.channel_labels.is_empty() && self.desc_fields.is_empty() {
            x.push_str("\t<desc />\n");
        } else {
            x.push_str("\t<desc>\n");
            if !self.channel_labels.is_empty() {
                x.push_str("\t\t<channels>\n");
                for (i, label) in self.channel_labels.iter().enumerate() {
                    x.push_str("\t\t\t<channel>\n");
                    elem(&mut x, 4, "label", label);
                    for (tag, value) in self.channel_fields.get(i).into_iter().flatten() {
                        elem(&mut x, 4, tag, value);
                    }
                    x.push_str("\t\t\t</channel>\n");
                }
                x.push_str("\t\t</channels>\n");
            }
            let mut open: Vec<&str> = Vec::new();
            for (path, value) in &self.desc_fields {
                let parts: Vec<&str> = path.split('/').collect();
                let (parents, leaf) = parts.split_at(parts.len() - 1);
                let shared = open.iter().zip(parents).take_while(|(a, b)| a == b).count();
                while open.len() > shared {
                    let tag = open.pop().expect("non-empty");
                    let _ = writeln!(x, "{}</{tag}>", "\t".repeat(open.len() + 2));
                }
                for tag in &parents[shared..] {
                    let _ = writeln!(x, "{}<{tag}>", "\t".repeat(open.len() + 2));
                    open.push(tag);
                }
                elem(&mut x, open.len() + 2, leaf[0], value);
            }
            while let Some(tag) = open.pop() {
                let _ = writeln!(x, "{}</{tag}>", "\t".repeat(open.len() + 2));
            }
            x.push_str("\t</desc>\n");
        }
        x.push_str("</info>\n");
        x
    }
}

impl From<StreamSpec> for StreamInfo {
    fn from(spec: StreamSpec) -> StreamInfo {
        let xml = spec.to_xml();
        StreamInfo {
            name: spec.name,
            content_type: spec.content_type,
            channel_count: spec.channel_count,
            nominal_srate: spec.nominal_srate,
            channel_format: spec.channel_format,
            source_id: spec.source_id,
            channel_labels: spec.channel_labels,
            can_drop_samples: false,
            xml,
        }
    }
}

impl From<&StreamSpec> for StreamInfo {
    fn from(spec: &StreamSpec) -> StreamInfo {
        spec.clone().into()
    }
}

/// A StreamFooter: its XML and the fields LabRecorder writes in it. A footer whose XML
/// does not parse keeps the XML and leaves the fields `None` (pyxdf ignores it too).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamFooter {
    pub xml: String,
    pub first_timestamp: Option<f64>,
    pub last_timestamp: Option<f64>,
    pub sample_count: Option<u64>,
    /// `<clock_offsets>` as listed in the footer (not used for synchronisation: the
    /// ClockOffset chunks are).
    pub clock_offsets: Vec<ClockOffset>,
}

impl StreamFooter {
    /// Parses what it can of a footer's XML.
    pub fn from_xml(xml: &str) -> StreamFooter {
        let root = Element::parse(xml).ok();
        let number = |name: &str| {
            root.as_ref()?
                .child(name)
                .and_then(|e| e.text.trim().parse::<f64>().ok())
        };
        let clock_offsets = root
            .as_ref()
            .and_then(|r| r.child("clock_offsets"))
            .map(|offsets| {
                offsets
                    .children
                    .iter()
                    .filter(|o| o.name == "offset")
                    .filter_map(|o| {
                        let get = |n: &str| o.child(n)?.text.trim().parse::<f64>().ok();
                        Some(ClockOffset {
                            collection_time: get("time")?,
                            value: get("value")?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        StreamFooter {
            xml: xml.to_string(),
            first_timestamp: number("first_timestamp"),
            last_timestamp: number("last_timestamp"),
            sample_count: root
                .as_ref()
                .and_then(|r| r.child("sample_count"))
                .and_then(|e| e.text.trim().parse::<u64>().ok()),
            clock_offsets,
        }
    }

    /// Renders a footer in LabRecorder's layout.
    pub(crate) fn render(
        first_timestamp: f64,
        last_timestamp: f64,
        sample_count: u64,
        clock_offsets: &[ClockOffset],
    ) -> String {
        let mut x = String::from("<?xml version=\"1.0\"?>\n<info>\n");
        let _ = writeln!(x, "\t<first_timestamp>{first_timestamp}</first_timestamp>");
        let _ = writeln!(x, "\t<last_timestamp>{last_timestamp}</last_timestamp>");
        let _ = writeln!(x, "\t<sample_count>{sample_count}</sample_count>");
        x.push_str("\t<clock_offsets>\n");
        for o in clock_offsets {
            let _ = writeln!(
                x,
                "\t\t<offset><time>{}</time><value>{}</value></offset>",
                o.collection_time, o.value
            );
        }
        x.push_str("\t</clock_offsets>\n</info>\n");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_parses_entities_cdata_and_empty_elements() {
        let e = Element::parse(
            "<?xml version=\"1.0\"?><!-- c --><info><name>a &amp; b&#x21;</name><desc/>\
             <x><![CDATA[<raw>]]></x></info>",
        )
        .unwrap();
        assert_eq!(e.child("name").unwrap().text, "a & b!");
        assert_eq!(e.child("x").unwrap().text, "<raw>");
        assert!(e.child("desc").unwrap().children.is_empty());
    }

    #[test]
    fn broken_xml_is_an_error_not_a_panic() {
        for bad in ["", "<info>", "<a></b>", "<a/><b/>", "<a>&nope;</a>", "</a>"] {
            assert!(Element::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn spec_renders_xml_that_parses_back_to_the_same_fields() {
        let mut spec = StreamSpec::new("MUA <V1>", "MUA", 3, 1000.0, ChannelFormat::Float32);
        spec.source_id = "rig-n & co".into();
        spec.channel_labels = vec!["e0".into(), "e'1".into(), "".into()];
        let info = StreamInfo::from_xml(&spec.to_xml()).unwrap();
        assert_eq!(info, StreamInfo::from(spec));
    }

    #[test]
    fn header_without_a_required_field_says_which() {
        let err = StreamInfo::from_xml("<info><channel_count>1</channel_count></info>");
        assert_eq!(err, Err(HeaderError::Missing("nominal_srate")));
        let err = StreamInfo::from_xml(
            "<info><channel_count>1</channel_count><nominal_srate>1</nominal_srate>\
             <channel_format>float16</channel_format></info>",
        );
        assert_eq!(err, Err(HeaderError::UnknownFormat("float16".into())));
    }
}
