//! The client libraries a process shows: shared objects it has mapped
//! (`/proc/PID/maps`: libpq, a Python package's C extension such as
//! aiohttp's `_http_parser`), files it has open (`/proc/PID/fd`: the
//! JVM keeps its class-path jars open), its class path and the paths its
//! command line names, and the module list the Go linker writes into a
//! Go binary (`.go.buildinfo`, `debug/buildinfo` in the Go source).
//! Read only for owners of CLOSE_WAIT sockets, each file size-capped.
//! Pure-Python libraries (requests, PyMySQL, redis-py) map nothing and
//! keep no file open, so they show only when a path names them.

use super::procfs::ProcFs;
use crate::model::{ClientLib, Library};

/// Bytes of `/proc/PID/maps` read (a JVM maps a few thousand regions,
/// about 100 bytes a line).
const MAPS_CAP: usize = 2 * 1024 * 1024;
/// File descriptors looked at for open jars and packages.
const FD_CAP: usize = 4096;
/// Libraries listed per process.
pub const LISTED: usize = 32;
/// Largest `.go.buildinfo` section read (a big binary's is tens of KB).
const BUILDINFO_CAP: u64 = 1024 * 1024;
/// Largest single read while walking the ELF headers.
const ELF_READ_CAP: u64 = 4 * 1024 * 1024;

/// What a path names: a library and, when the file name carries it, its
/// version. Pure.
pub fn identify(path: &str) -> Option<(ClientLib, Option<String>)> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let base = path.rsplit('/').next().unwrap_or(path);
    if let Some(pkg) = python_package(path) {
        let lib = match pkg.to_ascii_lowercase().as_str() {
            "aiohttp" => ClientLib::Aiohttp,
            "httpx" | "httpcore" => ClientLib::Httpx,
            "requests" | "urllib3" => ClientLib::Requests,
            "sqlalchemy" => ClientLib::SqlAlchemy,
            "psycopg2" | "psycopg2_binary.libs" => ClientLib::Psycopg2,
            "psycopg" | "psycopg_c" | "psycopg_binary" | "psycopg_binary.libs" | "psycopg_pool" => {
                ClientLib::Psycopg3
            }
            "pymysql" => ClientLib::PyMySql,
            "mysqldb" => ClientLib::MysqlClient,
            "redis" => ClientLib::RedisPy,
            "hiredis" => ClientLib::Hiredis,
            "asyncpg" => ClientLib::Asyncpg,
            _ => return None,
        };
        return Some((lib, None));
    }
    if let Some(pkg) = node_package(path) {
        let lib = match pkg {
            "undici" => ClientLib::Undici,
            "pg" | "pg-pool" => ClientLib::NodePg,
            "ioredis" => ClientLib::Ioredis,
            "redis" | "@redis/client" => ClientLib::NodeRedis,
            "axios" => ClientLib::Axios,
            _ => return None,
        };
        return Some((lib, None));
    }
    if let Some(stem) = base.strip_suffix(".jar") {
        let (name, version) = split_version(stem);
        let lib = match name.to_ascii_lowercase().as_str() {
            "hikaricp" | "hikaricp-java7" | "hikaricp-java6" => ClientLib::HikariCp,
            "httpclient" | "httpasyncclient" => ClientLib::ApacheHttpClient4,
            "httpclient5" => ClientLib::ApacheHttpClient5,
            "okhttp" => ClientLib::OkHttp,
            "jedis" => ClientLib::Jedis,
            "lettuce-core" | "lettuce" => ClientLib::Lettuce,
            _ => return None,
        };
        return Some((lib, version));
    }
    // C client libraries, by their soname (`libpq.so.5`, `libpq-3a0b.so.5.16`).
    let lib = if base.starts_with("libpq.so") || base.starts_with("libpq-") {
        ClientLib::Libpq
    } else if base.starts_with("libmysqlclient.so") || base.starts_with("libmariadb.so") {
        ClientLib::LibMysql
    } else {
        return None;
    };
    Some((lib, None))
}

/// The top-level package of a path inside a Python environment
/// (`.../site-packages/aiohttp/_http_parser.cpython-311-x86_64-linux-gnu.so`
/// -> `aiohttp`).
fn python_package(path: &str) -> Option<&str> {
    let rest = ["/site-packages/", "/dist-packages/"]
        .iter()
        .find_map(|m| path.rfind(m).map(|i| &path[i + m.len()..]))?;
    let first = rest.split('/').next()?;
    if rest.contains('/') {
        Some(first)
    } else {
        // A top-level module file: `_cffi_backend.cpython-311-...so`.
        first.split('.').next()
    }
}

/// The package of a path under `node_modules` (`@scope/name` kept whole).
fn node_package(path: &str) -> Option<&str> {
    let i = path.rfind("/node_modules/")?;
    let rest = &path[i + "/node_modules/".len()..];
    let mut parts = rest.splitn(3, '/');
    let first = parts.next()?;
    if first.starts_with('@') {
        let second = parts.next()?;
        Some(&rest[..first.len() + 1 + second.len()])
    } else {
        Some(first)
    }
}

/// `HikariCP-4.0.3` -> (`HikariCP`, `4.0.3`): the version starts at the
/// first `-` followed by a digit.
fn split_version(stem: &str) -> (&str, Option<String>) {
    let bytes = stem.as_bytes();
    for (i, _) in stem.match_indices('-') {
        if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return (&stem[..i], Some(stem[i + 1..].to_string()));
        }
    }
    (stem, None)
}

/// The path of each mapping in `/proc/PID/maps` text that has one.
pub fn mapped_paths(maps: &str) -> impl Iterator<Item = &str> {
    maps.lines().filter_map(|l| {
        // address perms offset dev inode path: the path is what follows
        // the fifth field and its padding (it may contain spaces).
        let mut rest = l;
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ')?;
            rest = &rest[end..];
        }
        let p = rest.trim_start();
        p.starts_with('/').then_some(p)
    })
}

/// The class-path entries (`-cp`, `-classpath`, `--class-path`, `-jar`)
/// and every argument that is a path (`/srv/app/node_modules/...`). Pure.
pub fn command_line_paths(cmdline: &[String]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut it = cmdline.iter().skip(1);
    while let Some(a) = it.next() {
        let cp = match a.as_str() {
            "-cp" | "-classpath" | "--class-path" => it.next().map(String::as_str),
            "-jar" => {
                if let Some(j) = it.next() {
                    out.push(("classpath", j.clone()));
                }
                continue;
            }
            _ => a
                .strip_prefix("--class-path=")
                .or_else(|| a.strip_prefix("-Djava.class.path=")),
        };
        match cp {
            Some(cp) => out.extend(cp.split(':').map(|p| ("classpath", p.to_string()))),
            None => {
                for part in a.split([':', '=', ',']) {
                    if part.contains('/') {
                        out.push(("cmdline", part.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// The modules of a Go binary's build info: (`module path`, `version`),
/// the toolchain first as (`go`, `go1.22.1`). `section` is the content
/// of `.go.buildinfo`; only the layout Go 1.18+ writes (strings inline,
/// `debug/buildinfo`) is understood. Pure.
pub fn go_modules(section: &[u8]) -> Vec<(String, String)> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    const FLAGS_VERSION_INLINE: u8 = 0x2;
    if section.len() < 32 || !section.starts_with(MAGIC) {
        return Vec::new();
    }
    if section[15] & FLAGS_VERSION_INLINE == 0 {
        return Vec::new();
    }
    let mut data = &section[32..];
    let Some(version) = varint_string(&mut data) else {
        return Vec::new();
    };
    let mut out = vec![(
        "go".to_string(),
        String::from_utf8_lossy(version).into_owned(),
    )];
    let Some(mut modinfo) = varint_string(&mut data) else {
        return out;
    };
    // The module text sits between two 16-byte sentinels.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let text = String::from_utf8_lossy(modinfo);
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["dep" | "mod", path, version, ..] => {
                out.push((path.to_string(), version.to_string()));
            }
            // A replacement of the module on the line before: the library
            // is still the one the code imports, so its path is kept.
            ["=>", ..] => {}
            _ => {}
        }
    }
    out
}

/// A uvarint length, then that many bytes.
fn varint_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut i = 0;
    loop {
        let b = *data.get(i)?;
        i += 1;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    let s = data.get(i..i.checked_add(len)?)?;
    *data = &data[i + len..];
    Some(s)
}

/// The library a Go module path is.
pub fn go_library(module: &str) -> Option<ClientLib> {
    let m = module.trim_end_matches(|c: char| c.is_ascii_digit());
    let m = m.strip_suffix("/v").unwrap_or(m);
    Some(match m {
        "go" => ClientLib::GoStd,
        "github.com/jackc/pgx" => ClientLib::Pgx,
        "github.com/lib/pq" => ClientLib::LibPq,
        "github.com/go-sql-driver/mysql" => ClientLib::GoMysql,
        "github.com/redis/go-redis" | "github.com/go-redis/redis" => ClientLib::GoRedis,
        _ => return None,
    })
}

/// Reads the `.go.buildinfo` section of the ELF file at `path` (a
/// `/proc/PID/exe` link is followed; the file must be regular). Every
/// read is capped; `None` when it is not an ELF file or has no section.
pub fn read_go_buildinfo(path: &std::path::Path) -> Option<Vec<u8>> {
    go_buildinfo_of(super::fsread::open_named(path).ok()?)
}

/// The `.go.buildinfo` section of the open file `f` (see
/// [`read_go_buildinfo`]).
fn go_buildinfo_of(f: std::fs::File) -> Option<Vec<u8>> {
    use object::{Object, ObjectSection};
    let cache = object::ReadCache::new(f);
    let file = object::File::parse(Capped(&cache)).ok()?;
    let section = file.section_by_name(".go.buildinfo")?;
    if section.size() > BUILDINFO_CAP {
        return None;
    }
    section.data().ok().map(<[u8]>::to_vec)
}

/// A [`object::ReadRef`] that refuses any single read over
/// [`ELF_READ_CAP`]: a hostile header cannot make us allocate much.
#[derive(Clone, Copy)]
struct Capped<'a>(&'a object::ReadCache<std::fs::File>);

impl<'a> object::ReadRef<'a> for Capped<'a> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size > ELF_READ_CAP {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'a [u8], ()> {
        let end = range.end.min(range.start.saturating_add(ELF_READ_CAP));
        self.0.read_bytes_at_until(range.start..end, delimiter)
    }
}

/// Everything `pid` shows, deduplicated by library (the first place seen
/// wins), at most [`LISTED`]. `files`: the fds that may be files, when the
/// owner lookup already read the rest of the table (sockets); otherwise
/// the table is listed.
pub fn collect(
    proc: &ProcFs,
    pid: u32,
    cmdline: Option<&[String]>,
    go: bool,
    files: Option<Vec<u32>>,
    warnings: &mut Vec<String>,
) -> Vec<Library> {
    let mut out: Vec<Library> = Vec::new();
    let mut add = |lib: ClientLib, version: Option<String>, seen_in: &str, path: &str| {
        if out.len() < LISTED && !out.iter().any(|l| l.name == lib.name()) {
            out.push(Library {
                name: lib.name().to_string(),
                version,
                seen_in: seen_in.to_string(),
                path: path.chars().take(512).collect(),
            });
        }
    };
    let maps = format!("{pid}/maps");
    if let Ok(c) = proc.read(&maps, MAPS_CAP) {
        c.note(&proc.path().join(&maps), MAPS_CAP, warnings);
        let text = c.text();
        let mut seen = std::collections::HashSet::new();
        for p in mapped_paths(&text) {
            if seen.insert(p)
                && let Some((lib, v)) = identify(p)
            {
                add(lib, v, "maps", p);
            }
        }
    }
    let fds = files.or_else(|| proc.fds(pid)).unwrap_or_default();
    for fd in fds.into_iter().take(FD_CAP) {
        let Some(t) = proc.link(&format!("{pid}/fd/{fd}")) else {
            continue;
        };
        if t.starts_with('/')
            && let Some((lib, v)) = identify(&t)
        {
            add(lib, v, "fd", &t);
        }
    }
    if let Some(cmd) = cmdline {
        for (src, p) in command_line_paths(cmd) {
            if let Some((lib, v)) = identify(&p) {
                add(lib, v, src, &p);
            }
        }
    }
    let exe = || {
        let root = proc.dir(".").ok()?;
        go_buildinfo_of(super::fsread::open_at_following(&root, &format!("{pid}/exe")).ok()?)
    };
    if go && let Some(section) = exe() {
        for (module, version) in go_modules(&section) {
            if let Some(lib) = go_library(&module) {
                add(lib, Some(version), "go-buildinfo", &module);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_libraries_by_path() {
        let cases = [
            (
                "/usr/local/lib/python3.11/dist-packages/aiohttp/_http_parser.cpython-311-x86_64-linux-gnu.so",
                Some("aiohttp"),
            ),
            (
                "/srv/venv/lib/python3.12/site-packages/psycopg2/_psycopg.cpython-312-x86_64-linux-gnu.so",
                Some("psycopg2"),
            ),
            (
                "/srv/venv/lib/python3.12/site-packages/psycopg2_binary.libs/libpq-e8a0573f.so.5.16",
                Some("psycopg2"),
            ),
            (
                "/srv/venv/lib/python3.12/site-packages/sqlalchemy/cyextension/collections.cpython-312-x86_64-linux-gnu.so",
                Some("SQLAlchemy"),
            ),
            ("/usr/lib/x86_64-linux-gnu/libpq.so.5.15", Some("libpq")),
            ("/usr/share/java/HikariCP.jar", Some("HikariCP")),
            ("/app/lib/HikariCP-4.0.3.jar", Some("HikariCP")),
            (
                "/usr/share/java/httpclient-4.5.14.jar",
                Some("Apache HttpClient 4"),
            ),
            (
                "/app/lib/httpclient5-5.2.1.jar",
                Some("Apache HttpClient 5"),
            ),
            ("/app/lib/okhttp-4.12.0.jar", Some("OkHttp")),
            ("/srv/app/node_modules/undici/lib/core.js", Some("undici")),
            (
                "/srv/app/node_modules/@redis/client/dist/index.js",
                Some("node-redis"),
            ),
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", None),
            (
                "/srv/venv/lib/python3.12/site-packages/yarl/_quoting_c.cpython-312.so",
                None,
            ),
            ("/app/lib/commons-lang3-3.12.0.jar", None),
        ];
        for (path, want) in cases {
            assert_eq!(identify(path).map(|(l, _)| l.name()), want, "{path}");
        }
        assert_eq!(
            identify("/app/lib/HikariCP-4.0.3.jar")
                .unwrap()
                .1
                .as_deref(),
            Some("4.0.3")
        );
    }

    #[test]
    fn reads_maps_and_command_lines() {
        let maps = "7f1c2a000000-7f1c2a020000 r--p 00000000 08:01 131 /usr/lib/x86_64-linux-gnu/libpq.so.5.15\n\
                    7f1c2b000000-7f1c2b001000 rw-p 00000000 00:00 0 \n\
                    7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f1c2c000000-7f1c2c020000 r-xp 00000000 08:01 99 /opt/my app/lib x.so\n";
        let paths: Vec<&str> = mapped_paths(maps).collect();
        assert_eq!(
            paths,
            [
                "/usr/lib/x86_64-linux-gnu/libpq.so.5.15",
                "/opt/my app/lib x.so"
            ]
        );
        let cmd: Vec<String> = [
            "java",
            "-Xmx1g",
            "-cp",
            "/app/classes:/usr/share/java/HikariCP.jar:/usr/share/java/httpclient.jar",
            "Main",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let found: Vec<&str> = command_line_paths(&cmd)
            .into_iter()
            .filter_map(|(_, p)| identify(&p).map(|(l, _)| l.name()))
            .collect();
        assert_eq!(found, ["HikariCP", "Apache HttpClient 4"]);
    }

    /// A build-info section as the Go 1.18+ linker lays it out.
    fn buildinfo(version: &str, modinfo: &str) -> Vec<u8> {
        let mut b = b"\xff Go buildinf:".to_vec();
        b.push(8);
        b.push(2);
        b.resize(32, 0);
        let mut put = |s: &[u8]| {
            let mut n = s.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            }
            b.extend_from_slice(s);
        };
        put(version.as_bytes());
        let mut m = vec![b'0'; 16];
        m.extend_from_slice(modinfo.as_bytes());
        m.extend_from_slice(b"\n");
        m.extend(std::iter::repeat_n(b'1', 16));
        put(&m);
        b
    }

    #[test]
    fn reads_go_build_info_from_fixture_bytes() {
        let text = std::fs::read("fixtures/go-buildinfo.bin").expect("fixture");
        let mods = go_modules(&text);
        assert_eq!(mods[0].0, "go");
        let libs: Vec<&str> = mods
            .iter()
            .filter_map(|(m, _)| go_library(m).map(|l| l.name()))
            .collect();
        assert!(
            libs.contains(&"pgx") && libs.contains(&"go-redis"),
            "{mods:?}"
        );
        // Hand-made: a replaced module, a truncated section, a bad varint.
        let b = buildinfo(
            "go1.22.1",
            "path\tex\nmod\tex\t(devel)\t\ndep\tgithub.com/lib/pq\tv1.10.9\th1:x\n=>\tgithub.com/lib/pq\tv1.10.8\t\n",
        );
        let m = go_modules(&b);
        assert_eq!(m[0], ("go".into(), "go1.22.1".into()));
        assert_eq!(
            m.last().unwrap(),
            &("github.com/lib/pq".into(), "v1.10.9".into())
        );
        assert!(go_modules(&b[..40]).len() <= 1);
        let mut bad = b.clone();
        bad.truncate(32);
        bad.extend_from_slice(&[0xff; 12]);
        assert!(go_modules(&bad).is_empty());
        assert!(go_modules(b"not an ELF section at all, but long enough").is_empty());
    }

    #[test]
    fn reads_a_real_go_binary_and_refuses_what_is_not_one() {
        use std::path::Path;
        assert!(read_go_buildinfo(Path::new("/proc/self/exe")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"\x7fELF\x02\x01\x01\0garbage").unwrap();
        assert!(read_go_buildinfo(&junk).is_none());
        match ["/usr/bin/promtool", "/usr/lib/go/bin/go", "/usr/bin/go"]
            .iter()
            .map(Path::new)
            .find(|p| p.is_file() && crate::collect::runtime::is_go_file(p))
        {
            Some(p) => {
                let s = read_go_buildinfo(p).expect("a Go binary has .go.buildinfo");
                let m = go_modules(&s);
                assert!(m[0].1.starts_with("go1."), "{m:?}");
            }
            None => crate::testutil::skip("no Go binary installed (promtool, go)"),
        }
    }

    /// The whole collector over a fake `/proc`: maps, an fd leading to a
    /// jar, a class path; a FIFO in place of maps cannot stall it.
    #[test]
    fn collects_from_a_proc_tree_and_survives_a_fifo() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("42");
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::write(
            p.join("maps"),
            "7f00-7f01 r-xp 00000000 08:01 7 /srv/venv/lib/python3.12/site-packages/aiohttp/_http_parser.cpython-312-x86_64-linux-gnu.so\n\
             7f01-7f02 r-xp 00000000 08:01 8 /usr/lib/x86_64-linux-gnu/libpq.so.5.15\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/app/lib/okhttp-4.12.0.jar", p.join("fd/5")).unwrap();
        std::os::unix::fs::symlink("socket:[123]", p.join("fd/6")).unwrap();
        let cmd: Vec<String> = ["java", "-cp", "/app/lib/HikariCP-5.1.0.jar", "Main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut w = Vec::new();
        let proc = ProcFs::open(root.path());
        let libs = collect(&proc, 42, Some(&cmd), false, None, &mut w);
        let got: Vec<(&str, &str)> = libs
            .iter()
            .map(|l| (l.name.as_str(), l.seen_in.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("aiohttp", "maps"),
                ("libpq", "maps"),
                ("OkHttp", "fd"),
                ("HikariCP", "classpath")
            ]
        );
        assert_eq!(libs[3].version.as_deref(), Some("5.1.0"));
        assert!(w.is_empty(), "{w:?}");
        // Told which fds may be files, it reads those and no others.
        let named = |fds: Vec<u32>| -> Vec<String> {
            collect(&proc, 42, None, false, Some(fds), &mut Vec::new())
                .into_iter()
                .map(|l| l.name)
                .collect()
        };
        assert!(named(vec![5]).contains(&"OkHttp".to_string()));
        assert!(!named(vec![6]).contains(&"OkHttp".to_string()));
        // A FIFO where maps should be: refused, not waited on.
        std::fs::remove_file(p.join("maps")).unwrap();
        let c = std::ffi::CString::new(p.join("maps").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let libs = collect(&proc, 42, None, true, None, &mut w);
        assert_eq!(libs.len(), 1, "{libs:?}");
    }
}
