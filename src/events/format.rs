//! The self-description tracefs gives of its binary data: an event's
//! `format` file (its id and each field's offset, size and signedness)
//! and `events/header_page` / `events/header_event` (the layout of a
//! ring-buffer page and of an entry header, kernel/trace/ring_buffer.c,
//! `ring_buffer_print_page_header` and `ring_buffer_print_entry_header`).
//! Pure parsers: fields are located from these files, never assumed.

/// One field of an event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
}

/// An event's `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u16,
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses a `format` file. Errors name what is missing.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("name:") {
                name = Some(n.trim().to_string());
            } else if let Some(n) = line.strip_prefix("ID:") {
                id = n.trim().parse::<u16>().ok();
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        let name = name.ok_or("format file without a name: line")?;
        let id = id.ok_or_else(|| format!("format of {name} without a valid ID: line"))?;
        Ok(Format { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// `field:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Result<Field, String> {
    let bad = || format!("unreadable format line '{line}'");
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse::<usize>().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse::<usize>().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl.ok_or_else(bad)?;
    // The name is the declaration's last word, without an array suffix.
    let last = decl.split_whitespace().last().ok_or_else(bad)?;
    let name = last
        .split('[')
        .next()
        .unwrap_or(last)
        .trim_start_matches('*');
    if name.is_empty() {
        return Err(bad());
    }
    Ok(Field {
        name: name.to_string(),
        offset: offset.ok_or_else(bad)?,
        size: size.ok_or_else(bad)?,
        signed,
    })
}

/// The layout of one ring-buffer page (`events/header_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub timestamp_offset: usize,
    pub commit_offset: usize,
    pub commit_size: usize,
    pub data_offset: usize,
}

impl PageHeader {
    pub fn parse(text: &str) -> Result<PageHeader, String> {
        let mut fields = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        let get = |n: &str| {
            fields
                .iter()
                .find(|f| f.name == n)
                .ok_or_else(|| format!("header_page has no '{n}' field"))
        };
        let ts = get("timestamp")?;
        let commit = get("commit")?;
        let data = get("data")?;
        if ts.size != 8 || !matches!(commit.size, 4 | 8) {
            return Err(format!(
                "header_page: unexpected sizes (timestamp {}, commit {})",
                ts.size, commit.size
            ));
        }
        Ok(PageHeader {
            timestamp_offset: ts.offset,
            commit_offset: commit.offset,
            commit_size: commit.size,
            data_offset: data.offset,
        })
    }
}

/// Checks `events/header_event` describes the entry header this reader
/// decodes: a 32-bit word of a 5-bit type_len and a 27-bit time delta,
/// then a 32-bit array word; padding 29, time extend 30, time stamp 31,
/// data lengths up to 28.
pub fn check_entry_header(text: &str) -> Result<(), String> {
    let norm: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "type_len : 5 bits",
        "time_delta : 27 bits",
        "array : 32 bits",
        "padding : type == 29",
        "time_extend : type == 30",
        "time_stamp : type == 31",
        "data max type_len == 28",
    ] {
        if !norm.contains(want) {
            return Err(format!(
                "header_event does not describe the expected entry header ('{want}' missing)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/tracefs")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn parses_this_kernels_set_state_format() {
        let f = Format::parse(&fixture("inet_sock_set_state.format")).unwrap();
        assert_eq!(f.name, "inet_sock_set_state");
        assert_eq!(f.id, 2287);
        let sk = f.field("skaddr").unwrap();
        assert_eq!((sk.offset, sk.size, sk.signed), (8, 8, false));
        let old = f.field("oldstate").unwrap();
        assert_eq!((old.offset, old.size, old.signed), (16, 4, true));
        let v6 = f.field("daddr_v6").unwrap();
        assert_eq!((v6.offset, v6.size), (56, 16));
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
        assert!(f.field("sock_cookie").is_none());
    }

    #[test]
    fn parses_reset_formats_with_cookie_and_sockaddr_fields() {
        let r = Format::parse(&fixture("tcp_receive_reset.format")).unwrap();
        assert_eq!(r.field("sock_cookie").unwrap().offset, 64);
        let s = Format::parse(&fixture("tcp_send_reset.format")).unwrap();
        let sa = s.field("saddr").unwrap();
        assert_eq!((sa.offset, sa.size), (32, 28));
        assert_eq!(s.field("reason").unwrap().offset, 28);
    }

    #[test]
    fn offsets_come_from_the_file_not_from_assumptions() {
        // A kernel with another layout: the parser follows it.
        let text = "name: inet_sock_set_state\nID: 7\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int oldstate;\toffset:40;\tsize:4;\tsigned:1;\n";
        let f = Format::parse(text).unwrap();
        assert_eq!(f.id, 7);
        assert_eq!(f.field("oldstate").unwrap().offset, 40);
    }

    #[test]
    fn refuses_broken_format_files() {
        assert!(Format::parse("ID: 3\n").unwrap_err().contains("name"));
        assert!(Format::parse("name: x\n").unwrap_err().contains("ID"));
        assert!(
            Format::parse("name: x\nID: 1\n\tfield:int a;\toffset:zz;\tsize:4;\n")
                .unwrap_err()
                .contains("unreadable")
        );
    }

    #[test]
    fn page_and_entry_headers_of_this_kernel() {
        let p = PageHeader::parse(&fixture("header_page")).unwrap();
        assert_eq!(
            p,
            PageHeader {
                timestamp_offset: 0,
                commit_offset: 8,
                commit_size: 8,
                data_offset: 16
            }
        );
        check_entry_header(&fixture("header_event")).unwrap();
        assert!(check_entry_header("type_len : 4 bits").is_err());
    }
}
