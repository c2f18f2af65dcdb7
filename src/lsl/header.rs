//! The header a stream is published with (a replayed one's, or the daemon's own outlets'):
//! its header XML, rewritten in place (every byte not named here stays as written). A relative
//! `<desc><stimuli><directory>` becomes absolute, fields liblsl cannot publish without
//! get placeholders, and single `<info>` fields can be set. Elements are located with
//! [`crate::xdf`]'s header walker ([`Element`], which keeps each element's byte span).
//!
//! Start-up code: everything here allocates; nothing runs while samples are sent.

use std::path::{Path, PathBuf};

use crate::xdf::{Element, StreamId};

/// Where the stimulus folder is named in a stream header.
const STIMULI_DIRECTORY: [&str; 4] = ["info", "desc", "stimuli", "directory"];

/// The first element at `path` (from the root, e.g. `["info", "desc"]`) of an XML text;
/// `None` if there is none or the text does not parse.
fn find_element(xml: &str, path: &[&str]) -> Option<Element> {
    Element::parse(xml).ok()?.find(path).cloned()
}

/// `<desc><stimuli><directory>` of a stream header, if present and not empty, as
/// written (relative to the XDF file's folder, or absolute).
pub fn stimuli_directory(header_xml: &str) -> Option<PathBuf> {
    let element = find_element(header_xml, &STIMULI_DIRECTORY)?;
    let dir = element.text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The header to publish for stream `id`: the file's XML with a relative
/// `desc/stimuli/directory` made absolute against `base_dir`, and the fields liblsl
/// insists on (`name`, `version`, `uid`, `created_at`, ports) added where missing.
pub fn outlet_header(xml: &str, id: StreamId, base_dir: &Path) -> String {
    let mut xml = xml.to_string();
    absolute_stimuli_directory(&mut xml, base_dir);
    ensure_field(&mut xml, "name", &format!("xdf-stream-{id}"));
    for (field, value) in instance_fields() {
        ensure_field(&mut xml, field, &value);
    }
    xml
}

/// Rewrites a relative, non-empty `desc/stimuli/directory` to the absolute path it
/// names under `base_dir` (resolved when it exists).
fn absolute_stimuli_directory(xml: &mut String, base_dir: &Path) {
    let Some(element) = find_element(xml, &STIMULI_DIRECTORY) else {
        return;
    };
    let dir = element.text.trim();
    if let (Some(inner), false) = (element.inner, dir.is_empty()) {
        if Path::new(dir).is_relative() {
            let joined = base_dir.join(dir);
            let abs = joined.canonicalize().unwrap_or(joined);
            let text = abs.to_string_lossy();
            xml.replace_range(inner, &quick_xml::escape::escape(text.as_ref()));
        }
    }
}

/// The fields liblsl needs in a header it publishes, with the values given where they
/// are missing or empty: it cannot parse an empty number, and it can only overwrite a
/// field that has text (it does so for all but `version` when it creates the outlet;
/// a stream missing `session_id` would never be found).
fn instance_fields() -> [(&'static str, String); 9] {
    let version = format!("{:.2}", f64::from(super::protocol_version()) / 100.0);
    [
        ("version", version),
        ("created_at", "0".into()),
        ("uid", "replay-placeholder-uid".into()),
        ("session_id", "default".into()),
        ("hostname", "replay".into()),
        ("v4data_port", "0".into()),
        ("v4service_port", "0".into()),
        ("v6data_port", "0".into()),
        ("v6service_port", "0".into()),
    ]
}

/// Sets the text of `<info><field>` (adding the field if missing).
pub fn set_field(xml: &mut String, field: &str, value: &str) {
    let element = format!("<{field}>{}</{field}>", quick_xml::escape::escape(value));
    match find_element(xml, &["info", field]) {
        Some(found) => xml.replace_range(found.span, &element),
        None => ensure_field(xml, field, value),
    }
}

/// Gives `<info><field>` the text `value` if it is missing or empty.
fn ensure_field(xml: &mut String, field: &str, value: &str) {
    let element = format!("<{field}>{}</{field}>", quick_xml::escape::escape(value));
    match find_element(xml, &["info", field]) {
        Some(found) if !found.text.trim().is_empty() => {}
        Some(found) => xml.replace_range(found.span, &element),
        None => {
            if let Some(Some(inner)) = find_element(xml, &["info"]).map(|e| e.inner) {
                xml.insert_str(inner.end, &element);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version=\"1.0\"?>\n<info>\n\t<name>markers</name>\n\t<type>Markers</type>\n\t<channel_count>1</channel_count>\n\t<nominal_srate>0</nominal_srate>\n\t<channel_format>string</channel_format>\n\t<source_id>sim-1</source_id>\n\t<desc>\n\t\t<stimuli>\n\t\t\t<directory>images &amp; more</directory>\n\t\t</stimuli>\n\t</desc>\n</info>\n";

    #[test]
    fn finds_an_elements_text_and_its_span() {
        let found = find_element(HEADER, &STIMULI_DIRECTORY).unwrap();
        assert_eq!(found.text, "images & more");
        assert_eq!(&HEADER[found.inner.unwrap()], "images &amp; more");
        assert_eq!(
            &HEADER[found.span],
            "<directory>images &amp; more</directory>"
        );
        assert!(find_element(HEADER, &["info", "uid"]).is_none());
        assert!(find_element(HEADER, &["info", "directory"]).is_none());
    }

    #[test]
    fn a_later_element_on_the_path_is_found_past_an_earlier_one_without_it() {
        let xml = "<info><desc><x/></desc><desc><stimuli><directory>d</directory></stimuli></desc></info>";
        assert_eq!(stimuli_directory(xml).unwrap(), PathBuf::from("d"));
        let empty = find_element("<info><desc/></info>", &["info", "desc"]).unwrap();
        assert_eq!(empty.inner, None);
        assert_eq!(empty.span, 6..13);
    }

    #[test]
    fn relative_stimuli_directory_becomes_absolute_and_nothing_else_changes() {
        let xml = outlet_header(HEADER, StreamId(3), Path::new("/data/session"));
        assert_eq!(
            stimuli_directory(&xml).unwrap(),
            PathBuf::from("/data/session/images & more")
        );
        let mut restored = xml.replace("/data/session/images &amp; more", "images &amp; more");
        for (field, value) in instance_fields() {
            restored = restored.replace(&format!("<{field}>{value}</{field}>"), "");
        }
        assert_eq!(restored, HEADER);
    }

    #[test]
    fn absolute_stimuli_directory_and_complete_headers_are_kept() {
        let abs = HEADER.replace("images &amp; more", "/srv/images");
        let fields: String = instance_fields()
            .iter()
            .map(|(f, _)| format!("<{f}>1</{f}>"))
            .collect();
        let full = abs.replace("<desc>", &format!("{fields}\n\t<desc>"));
        assert_eq!(outlet_header(&full, StreamId(1), Path::new("/x")), full);
        let empty_name = full.replace("<name>markers</name>", "<name/>");
        let fixed = outlet_header(&empty_name, StreamId(7), Path::new("/x"));
        assert!(fixed.contains("<name>xdf-stream-7</name>"), "{fixed}");
    }

    #[test]
    fn set_field_replaces_a_field_or_adds_it() {
        let mut xml = HEADER.to_string();
        set_field(&mut xml, "channel_format", "double64");
        assert!(xml.contains("\t<channel_format>double64</channel_format>\n"));
        set_field(&mut xml, "uid", "a<b");
        assert!(xml.ends_with("<uid>a&lt;b</uid></info>\n"), "{xml}");
    }
}
