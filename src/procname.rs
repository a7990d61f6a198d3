//! Names a person recognises a process by: the kernel's comm is cut to
//! 15 bytes (`TASK_COMM_LEN` in `include/linux/sched.h`), and for a
//! runtime (`java`, `python3`, `node`) it names the interpreter, not the
//! service. Pure: works on what the snapshot holds.

use crate::model::Process;

/// Bytes the kernel keeps of a command name (`TASK_COMM_LEN` - 1).
pub const COMM_LEN: usize = 15;

/// The last path component of `path`, without the ` (deleted)` the
/// kernel appends to `/proc/PID/exe` once the file is replaced.
pub fn basename(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

/// `s` as text safe to print on a terminal: control characters and
/// bidirectional or zero-width format characters escaped (`\x1b`, `\n`,
/// `\u{202e}`), see [`crate::escape`], so that a process name cannot
/// move the cursor or recolour a terminal.
pub fn printable(s: &str) -> String {
    crate::escape::escaped(s)
}

/// Interpreters whose own name does not identify a service. The one
/// place interpreters are recognised by name: `diag::peer::Runtime`
/// asks [`interpreter`] too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    Java,
    Python,
    Node,
    Ruby,
    /// perl, php, dotnet, bun, deno: the first argument that is not an
    /// option names the program.
    Other,
}

/// The interpreter an executable's base name (`python3.11`, `ruby3.1`,
/// `node`) is, if any.
pub fn interpreter(name: &str) -> Option<Interpreter> {
    let versioned = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    if name == "java" {
        Some(Interpreter::Java)
    } else if versioned("python") || versioned("pypy") {
        Some(Interpreter::Python)
    } else if name == "node" || name == "nodejs" {
        Some(Interpreter::Node)
    } else if versioned("ruby") {
        Some(Interpreter::Ruby)
    } else if versioned("perl")
        || versioned("php")
        || matches!(name, "php-cgi" | "dotnet" | "bun" | "deno")
    {
        Some(Interpreter::Other)
    } else {
        None
    }
}

impl Interpreter {
    /// Options whose value is the next argument.
    fn takes_value(self, opt: &str) -> bool {
        match self {
            Interpreter::Java => matches!(
                opt,
                "-cp"
                    | "-classpath"
                    | "--class-path"
                    | "-p"
                    | "--module-path"
                    | "--upgrade-module-path"
                    | "--add-modules"
                    | "--add-opens"
                    | "--add-exports"
                    | "--add-reads"
                    | "--limit-modules"
                    | "--patch-module"
            ),
            Interpreter::Python => matches!(opt, "-W" | "-X" | "--check-hash-based-pycs"),
            Interpreter::Node => matches!(
                opt,
                "-r" | "--require"
                    | "--import"
                    | "--loader"
                    | "--experimental-loader"
                    | "-C"
                    | "--conditions"
            ),
            Interpreter::Ruby => matches!(opt, "-I" | "-r" | "-C" | "-E"),
            Interpreter::Other => false,
        }
    }

    /// Options that name the program themselves (`java -jar X`,
    /// `python3 -m X`, `node -e CODE`).
    fn names_program(self, opt: &str) -> bool {
        match self {
            Interpreter::Java => matches!(opt, "-jar" | "-m" | "--module"),
            Interpreter::Python => matches!(opt, "-m" | "-c"),
            Interpreter::Node => matches!(opt, "-e" | "--eval" | "-p" | "--print"),
            Interpreter::Ruby => opt == "-e",
            Interpreter::Other => false,
        }
    }

    /// Index of the first argument (after argv[0]) that names the program,
    /// skipping the runtime's own options and their values.
    fn program_index(self, args: &[String]) -> Option<usize> {
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                return (i + 1 < args.len()).then_some(i + 1);
            }
            if !a.starts_with('-') || a == "-" || self.names_program(a) {
                return Some(i);
            }
            i += if self.takes_value(a) { 2 } else { 1 };
        }
        None
    }
}

impl Process {
    /// The executable's name, argv[0]'s name and the kernel's comm, the
    /// names `--comm` matches (each at most once, empty ones left out).
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::with_capacity(3);
        let exe = self.exe.as_deref().map(basename);
        let argv0 = self.argv0().map(basename);
        for n in [Some(self.comm.as_str()), exe, argv0].into_iter().flatten() {
            if !n.is_empty() && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    fn argv0(&self) -> Option<&str> {
        self.cmdline.as_ref()?.first().map(String::as_str)
    }

    /// The name to show for this process: its comm, or, when the kernel
    /// cut the comm at 15 bytes, the executable's or argv[0]'s name that
    /// it is the start of (`billing-sync-wo` -> `billing-sync-worker`).
    /// Control characters are escaped.
    pub fn display_name(&self) -> String {
        let comm = self.comm.as_str();
        if comm.len() >= COMM_LEN {
            let exe = self.exe.as_deref().map(basename);
            let argv0 = self.argv0().map(basename);
            if let Some(long) = [exe, argv0]
                .into_iter()
                .flatten()
                .find(|n| n.len() > comm.len() && n.starts_with(comm))
            {
                return printable(long);
            }
        }
        printable(comm)
    }

    /// A command line for tables, at most `max` characters: the display
    /// name, then the arguments. For a runtime (`java`, `python3`, `node`,
    /// `ruby`, ...) its own options are skipped so that what it runs comes
    /// first: `java -jar billing.jar`, `python3 -m celery worker`,
    /// `node server.js`. A title a process wrote over its arguments
    /// (`nginx: worker process`) is shown as it is. Cut with `…`;
    /// control characters are escaped. The JSON has the whole command
    /// line.
    pub fn short_command(&self, max: usize) -> String {
        let (name, args) = self.command_parts();
        let mut line = name;
        for a in args {
            if line.chars().count() > max {
                break;
            }
            line.push(' ');
            line.push_str(&printable(a));
        }
        cut(&line, max)
    }

    /// A name for one-line text (findings, `assert`): the display name,
    /// and for a runtime what it runs (`java -jar billing.jar`, `python3
    /// -m celery`, `node server.js`), at most 60 characters. Control
    /// characters are escaped.
    pub fn label(&self) -> String {
        let (mut line, args) = self.command_parts();
        if self.runtime().is_some() {
            let n = match args.first() {
                Some(flag) if flag.starts_with('-') => 2,
                Some(_) => 1,
                None => 0,
            };
            for a in args.iter().take(n) {
                line.push(' ');
                line.push_str(&printable(a));
            }
        }
        cut(&line, LABEL_MAX)
    }

    fn runtime(&self) -> Option<Interpreter> {
        let argv0 = self.argv0().map(basename);
        [
            self.exe.as_deref().map(basename),
            argv0,
            Some(self.comm.as_str()),
        ]
        .into_iter()
        .flatten()
        .find_map(interpreter)
    }

    /// The name to show first and the arguments after it: from the
    /// program a runtime runs on, all of them otherwise. A title written
    /// over the arguments (`nginx: worker process`) is the name.
    fn command_parts(&self) -> (String, &[String]) {
        let Some(argv) = self.cmdline.as_deref().filter(|a| !a.is_empty()) else {
            return (self.display_name(), &[]);
        };
        if argv.len() == 1 && argv[0].contains(' ') {
            return (printable(&argv[0]), &[]);
        }
        let args = &argv[1..];
        let from = self
            .runtime()
            .and_then(|r| r.program_index(args))
            .unwrap_or_default();
        (self.display_name(), &args[from..])
    }
}

/// Characters of [`Process::label`] at most.
pub const LABEL_MAX: usize = 60;

/// `s` cut to `max` characters, the last one replaced by `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(comm: &str, exe: Option<&str>, argv: &[&str]) -> Process {
        let mut p = Process::named(comm);
        p.exe = exe.map(str::to_string);
        p.cmdline = (!argv.is_empty()).then(|| argv.iter().map(|a| a.to_string()).collect());
        p
    }

    #[test]
    fn a_cut_comm_shows_the_executable_name() {
        let p = process(
            "billing-sync-wo",
            Some("/opt/billing/bin/billing-sync-worker"),
            &["/opt/billing/bin/billing-sync-worker", "--queue", "q1"],
        );
        assert_eq!(p.display_name(), "billing-sync-worker");
        assert_eq!(
            p.short_command(60),
            "billing-sync-worker --queue q1",
            "the name, then the arguments"
        );
        // A replaced binary: the kernel marks the link.
        let p = process(
            "billing-sync-wo",
            Some("/opt/billing-sync-worker (deleted)"),
            &[],
        );
        assert_eq!(p.display_name(), "billing-sync-worker");
        // No exe (another user's process): argv[0] serves.
        let p = process("billing-sync-wo", None, &["./billing-sync-worker"]);
        assert_eq!(p.display_name(), "billing-sync-worker");
    }

    #[test]
    fn a_comm_that_is_not_cut_or_not_a_prefix_stays() {
        // Short comm: not cut, whatever argv[0] says.
        let p = process("nginx", Some("/usr/sbin/nginx"), &["nginx: worker process"]);
        assert_eq!(p.display_name(), "nginx");
        assert_eq!(p.short_command(60), "nginx: worker process");
        // A 15-byte thread-style name that the exe does not start with.
        let p = process("worker-pool-123", Some("/usr/bin/java"), &["java"]);
        assert_eq!(p.display_name(), "worker-pool-123");
        // Kernel thread: no exe, no cmdline.
        let p = process("kworker/0:1", None, &[]);
        assert_eq!(p.display_name(), "kworker/0:1");
        assert_eq!(p.short_command(60), "kworker/0:1");
    }

    #[test]
    fn runtimes_show_what_they_run() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "java",
                &[
                    "/usr/lib/jvm/java-17/bin/java",
                    "-Xmx2g",
                    "-cp",
                    "/opt/lib/*",
                    "-Dapp=1",
                    "-jar",
                    "billing.jar",
                    "--port",
                    "8080",
                ],
                "java -jar billing.jar --port 8080",
            ),
            (
                "java",
                &[
                    "java",
                    "-Xss1m",
                    "-classpath",
                    "a.jar:b.jar",
                    "com.example.Main",
                ],
                "java com.example.Main",
            ),
            (
                "python3",
                &[
                    "/usr/bin/python3",
                    "-u",
                    "-W",
                    "ignore",
                    "/srv/app/worker.py",
                    "-v",
                ],
                "python3 /srv/app/worker.py -v",
            ),
            (
                "python3.11",
                &["python3.11", "-O", "-m", "celery", "worker"],
                "python3.11 -m celery worker",
            ),
            (
                "node",
                &[
                    "node",
                    "--max-old-space-size=512",
                    "-r",
                    "dotenv/config",
                    "server.js",
                ],
                "node server.js",
            ),
            ("ruby", &["ruby", "-I", "lib", "app.rb"], "ruby app.rb"),
            // Not a runtime: options are the program's own.
            (
                "redis-server",
                &["redis-server", "--port", "6379"],
                "redis-server --port 6379",
            ),
        ];
        for (comm, argv, want) in cases {
            let p = process(comm, None, argv);
            assert_eq!(p.short_command(60), *want, "{argv:?}");
        }
    }

    #[test]
    fn labels_name_what_a_runtime_runs() {
        let cases: &[(&str, Option<&str>, &[&str], &str)] = &[
            (
                "java",
                None,
                &["java", "-Xmx1g", "-jar", "billing.jar", "--port", "1"],
                "java -jar billing.jar",
            ),
            (
                "python3",
                None,
                &["python3", "-u", "worker.py", "-v"],
                "python3 worker.py",
            ),
            (
                "python3",
                None,
                &["python3", "-m", "celery", "worker"],
                "python3 -m celery",
            ),
            (
                "node",
                None,
                &["node", "server.js", "--x"],
                "node server.js",
            ),
            ("java", None, &["java"], "java"),
            // Not a runtime: its name alone.
            (
                "billing-sync-wo",
                Some("/opt/billing-sync-worker"),
                &["billing-sync-worker", "-q"],
                "billing-sync-worker",
            ),
            (
                "nginx",
                None,
                &["nginx: master process /usr/sbin/nginx"],
                "nginx: master process /usr/sbin/nginx",
            ),
            ("sshd", None, &[], "sshd"),
        ];
        for (comm, exe, argv, want) in cases {
            assert_eq!(process(comm, *exe, argv).label(), *want, "{argv:?}");
        }
    }

    #[test]
    fn short_commands_are_cut_and_escaped() {
        let p = process(
            "java",
            None,
            &[
                "java",
                "-jar",
                "/opt/a/very/long/path/to/the/billing-service-2.3.1.jar",
            ],
        );
        let s = p.short_command(30);
        assert_eq!(s.chars().count(), 30);
        assert!(s.starts_with("java -jar /opt/") && s.ends_with('…'), "{s}");
        let p = process("evil\x1b[2J", None, &["evil\x1b[2J", "x\ny"]);
        let s = p.short_command(60);
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert_eq!(s, "evil\\x1b[2J x\\ny");
    }

    #[test]
    fn names_are_comm_exe_and_argv0_basenames() {
        let p = process(
            "billing-sync-wo",
            Some("/opt/bin/billing-sync-worker"),
            &["billing-sync-worker", "-x"],
        );
        assert_eq!(p.names(), ["billing-sync-wo", "billing-sync-worker"]);
        let p = process(
            "python3",
            Some("/usr/bin/python3.11"),
            &["/usr/bin/python3", "x.py"],
        );
        assert_eq!(p.names(), ["python3", "python3.11"]);
        assert_eq!(Process::named("sshd").names(), ["sshd"]);
    }
}
