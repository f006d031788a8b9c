//! Command line: the getopts table → which mode to run and with which config file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::DEFAULT_CONFIG_PATH;
use crate::control::render::StatsFormat;

/// What the process is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Serve POP3 (detached unless `-F`).
    Daemon,
    /// `-i [--tls]`: one session on stdin/stdout (inetd, systemd
    /// `Accept=yes`); `tls`: it starts with a TLS handshake.
    Inetd { tls: bool },
    /// `-t`: check the config and print the effective settings.
    CheckConfig,
    /// `--demo [DIR]`: self-contained demo as the current user.
    Demo(Option<PathBuf>),
    /// `--hash-password`: read a password, print a hash for the passwd file.
    HashPassword,
    /// `--who`: the running daemon's sessions.
    Who,
    /// `--kick USER|ADDRESS`: end the matching sessions.
    Kick(String),
    /// `--stats [--openmetrics | --prometheus]`: the daemon's counters.
    Stats { format: StatsFormat },
    /// `-V`
    Version,
    /// `-h`
    Help,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-f FILE`, or [`DEFAULT_CONFIG_PATH`].
    pub config: PathBuf,
    /// `-F`: stay in the foreground and log to stderr.
    pub foreground: bool,
    /// `--listen ADDR` (only with `--demo`): the demo's plain POP3 address
    /// instead of the config's; port 0 picks a free port.
    pub listen: Option<SocketAddr>,
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; try 'ironpop -h'", self.0)
    }
}

impl std::error::Error for CliError {}

/// What an option takes after it.
enum Takes {
    Nothing,
    /// A value, named in the help by the hint.
    Value(&'static str),
    /// `--opt=VALUE` or nothing.
    OptionalValue(&'static str),
}

/// Every option: short name, long name, a short help text, what it takes.
/// The help the user sees is `usage()`'s; getopts only parses with these.
const OPTIONS: &[(&str, &str, &str, Takes)] = &[
    ("f", "", "configuration file", Takes::Value("FILE")),
    (
        "F",
        "",
        "stay in the foreground, log to stderr",
        Takes::Nothing,
    ),
    (
        "t",
        "",
        "check the configuration and print it",
        Takes::Nothing,
    ),
    (
        "i",
        "",
        "serve one session on stdin/stdout (inetd)",
        Takes::Nothing,
    ),
    (
        "",
        "tls",
        "with -i: start with a TLS handshake (port 995)",
        Takes::Nothing,
    ),
    // `--demo=DIR`; `--demo DIR` arrives as a free argument.
    (
        "",
        "demo",
        "run a self-contained demo",
        Takes::OptionalValue("DIR"),
    ),
    (
        "",
        "listen",
        "with --demo: serve POP3 on ADDR",
        Takes::Value("ADDR"),
    ),
    (
        "",
        "hash-password",
        "read a password, print its hash",
        Takes::Nothing,
    ),
    (
        "",
        "who",
        "list the running daemon's sessions",
        Takes::Nothing,
    ),
    (
        "",
        "kick",
        "end the sessions of a user or address",
        Takes::Value("USER|ADDRESS"),
    ),
    (
        "",
        "stats",
        "print the running daemon's counters",
        Takes::Nothing,
    ),
    (
        "",
        "openmetrics",
        "with --stats: OpenMetrics text format",
        Takes::Nothing,
    ),
    (
        "",
        "prometheus",
        "with --stats: Prometheus text format (node_exporter)",
        Takes::Nothing,
    ),
    ("V", "version", "print the version", Takes::Nothing),
    ("h", "help", "print this help", Takes::Nothing),
];

fn table() -> getopts::Options {
    let mut o = getopts::Options::new();
    for (short, long, help, takes) in OPTIONS {
        match takes {
            Takes::Nothing => o.optflag(short, long, help),
            Takes::Value(hint) => o.optopt(short, long, help, hint),
            Takes::OptionalValue(hint) => o.optflagopt(short, long, help, hint),
        };
    }
    o
}

/// Whether the flag `modifier` of the mode `mode` is given; given without
/// its mode, it is an error that says `why`.
fn modifier(m: &getopts::Matches, mode: &str, modifier: &str, why: &str) -> Result<bool, CliError> {
    let given = m.opt_present(modifier);
    if given && !m.opt_present(mode) {
        return Err(CliError(why.into()));
    }
    Ok(given)
}

/// Parses the arguments (without argv\[0\]).
pub fn parse(args: &[String]) -> Result<Options, CliError> {
    let m = table()
        .parse(args)
        .map_err(|e| CliError(getopts_message(&e)))?;

    let tls = modifier(
        &m,
        "i",
        "tls",
        "--tls only applies to -i (the daemon takes listen_tls from the config)",
    )?;
    let kick = m.opt_str("kick").unwrap_or_default();
    if m.opt_present("kick") && kick.is_empty() {
        return Err(CliError("--kick needs a user name or an address".into()));
    }
    let openmetrics = modifier(
        &m,
        "stats",
        "openmetrics",
        "--openmetrics only applies to --stats",
    )?;
    let prometheus = modifier(
        &m,
        "stats",
        "prometheus",
        "--prometheus only applies to --stats",
    )?;
    let format = match (openmetrics, prometheus) {
        (false, false) => StatsFormat::Table,
        (true, false) => StatsFormat::OpenMetrics,
        (false, true) => StatsFormat::Prometheus,
        (true, true) => {
            return Err(CliError(
                "--openmetrics and --prometheus cannot be combined".into(),
            ))
        }
    };
    // Each mode by its option, in the order the usage lists them.
    let mut modes: Vec<(String, Mode)> = [
        ("t", Mode::CheckConfig),
        ("i", Mode::Inetd { tls }),
        ("demo", Mode::Demo(m.opt_str("demo").map(PathBuf::from))),
        ("hash-password", Mode::HashPassword),
        ("who", Mode::Who),
        ("kick", Mode::Kick(kick)),
        ("stats", Mode::Stats { format }),
        ("V", Mode::Version),
        ("h", Mode::Help),
    ]
    .into_iter()
    .filter(|(opt, _)| m.opt_present(opt))
    .map(|(opt, mode)| (dashed(opt), mode))
    .collect();
    let (name, mut mode) = match modes.len() {
        0 => (String::new(), Mode::Daemon),
        1 => modes.remove(0),
        _ => {
            let names: Vec<&str> = modes.iter().map(|(n, _)| n.as_str()).collect();
            return Err(CliError(format!(
                "{} cannot be combined",
                names.join(" and ")
            )));
        }
    };

    // Free arguments: only the demo directory.
    match (&mut mode, m.free.as_slice()) {
        (_, []) => {}
        (Mode::Demo(dir @ None), [one]) => *dir = Some(PathBuf::from(one)),
        (Mode::Demo(_), _) => {
            return Err(CliError("--demo takes at most one directory".into()));
        }
        (_, [first, ..]) => {
            return Err(CliError(format!("unexpected argument '{first}'")));
        }
    }
    if matches!(mode, Mode::Demo(Some(ref d)) if d.as_os_str().is_empty()) {
        return Err(CliError("--demo needs a non-empty directory name".into()));
    }

    let foreground = m.opt_present("F");
    let config = m.opt_str("f");
    let uses_config = matches!(
        mode,
        Mode::Daemon
            | Mode::CheckConfig
            | Mode::Inetd { .. }
            | Mode::Who
            | Mode::Kick(_)
            | Mode::Stats { .. }
    );
    if config.is_some() && !uses_config {
        return Err(CliError(format!(
            "-f does not apply to {name} (it selects the config of the daemon, -t, -i and the control commands)"
        )));
    }
    if foreground && mode != Mode::Daemon {
        return Err(CliError(format!(
            "-F does not apply to {name} (it only keeps the daemon in the foreground)"
        )));
    }
    let config = match config {
        Some(c) if c.is_empty() => return Err(CliError("-f needs a file name".into())),
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(DEFAULT_CONFIG_PATH),
    };
    let listen = match m.opt_str("listen") {
        None => None,
        Some(_) if !matches!(mode, Mode::Demo(_)) => {
            return Err(CliError(
                "--listen only applies to --demo (the daemon takes listen from the config)".into(),
            ))
        }
        Some(a) => Some(a.parse().map_err(|_| {
            CliError(format!(
                "--listen needs an address like 127.0.0.1:2110 or [::1]:2110, not '{a}'"
            ))
        })?),
    };
    Ok(Options {
        mode,
        config,
        foreground,
        listen,
    })
}

/// getopts' messages, phrased like the rest of ironpop's.
fn getopts_message(e: &getopts::Fail) -> String {
    use getopts::Fail;
    match e {
        Fail::ArgumentMissing(o) => format!("option '{}' needs a value", dashed(o)),
        Fail::UnrecognizedOption(o) => format!("unknown option '{}'", dashed(o)),
        Fail::OptionMissing(o) => format!("option '{}' is required", dashed(o)),
        Fail::OptionDuplicated(o) => format!("option '{}' given more than once", dashed(o)),
        Fail::UnexpectedArgument(o) => format!("option '{}' does not take a value", dashed(o)),
    }
}

fn dashed(name: &str) -> String {
    if name.starts_with('-') {
        name.to_owned()
    } else if name.chars().count() == 1 {
        format!("-{name}")
    } else {
        format!("--{name}")
    }
}

/// The text `ironpop -h` prints.
pub fn usage() -> String {
    format!(
        "\
ironpop {version} - a POP3 server for Unix mbox spools

usage:
  ironpop [-F] [-f FILE]     run the daemon (detaches and writes a pid file unless -F)
  ironpop -i [--tls] [-f FILE]  one session on stdin/stdout (inetd, systemd Accept=yes)
  ironpop -t [-f FILE]       check the configuration and print the effective settings
  ironpop --demo [DIR] [--listen ADDR]
                             self-contained demo as the current user (default DIR: ./ironpop-demo)
  ironpop --hash-password    read a password, print a yescrypt hash for the passwd file
  ironpop --who [-f FILE]    list the running daemon's sessions
  ironpop --kick USER|ADDRESS [-f FILE]  end those sessions (without UPDATE)
  ironpop --stats [--openmetrics | --prometheus] [-f FILE]
                             print the daemon's counters
  ironpop -V | -h

options:
  -f FILE           configuration file (default {config})
  -F                stay in the foreground and log to stderr
  -t                check the configuration, print it, exit 0 when valid
  -i                inetd mode: serve one session on stdin/stdout, log to syslog
  --tls             with -i: the session starts with a TLS handshake (POP3S)
  --demo [DIR]      serve a sample mailbox on 127.0.0.1:1110 (user demo, password demo)
  --listen ADDR     with --demo: serve POP3 on ADDR instead (port 0: any free port),
                    and POP3S on a free port of the same address
  --hash-password   read a password (no echo on a terminal, else one line of stdin)
  --who             ask the daemon (control_socket) who is connected; in inetd mode,
                    list the sessions holding mailbox locks in state_dir
  --kick TARGET     end the sessions of user TARGET, or from address TARGET;
                    exit status 1 when none matched
  --stats           the daemon's counters since it started
  --openmetrics     with --stats: the OpenMetrics text format
  --prometheus      with --stats: the Prometheus text format (node_exporter's textfile collector)
  -V, --version     print the version
  -h, --help        print this help

See ironpop(8) and ironpop.conf(5).
",
        version = env!("CARGO_PKG_VERSION"),
        config = DEFAULT_CONFIG_PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, CliError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&v)
    }

    fn mode(args: &[&str]) -> Mode {
        p(args).unwrap().mode
    }

    fn err(args: &[&str]) -> String {
        p(args).unwrap_err().to_string()
    }

    #[test]
    fn no_arguments_is_the_daemon_with_the_default_config() {
        let o = p(&[]).unwrap();
        assert_eq!(o.mode, Mode::Daemon);
        assert_eq!(o.config, PathBuf::from(DEFAULT_CONFIG_PATH));
        assert!(!o.foreground);
    }

    #[test]
    fn foreground_and_config_file() {
        let o = p(&["-F", "-f", "/tmp/x.conf"]).unwrap();
        assert_eq!(o.mode, Mode::Daemon);
        assert!(o.foreground);
        assert_eq!(o.config, PathBuf::from("/tmp/x.conf"));
        assert_eq!(p(&["-Ff/a"]).unwrap().config, PathBuf::from("/a"));
    }

    #[test]
    fn check_config_takes_a_file() {
        let o = p(&["-t", "-f", "a.conf"]).unwrap();
        assert_eq!(o.mode, Mode::CheckConfig);
        assert_eq!(o.config, PathBuf::from("a.conf"));
    }

    #[test]
    fn demo_with_and_without_directory() {
        assert_eq!(mode(&["--demo"]), Mode::Demo(None));
        assert_eq!(mode(&["--demo", "d"]), Mode::Demo(Some("d".into())));
        assert_eq!(mode(&["--demo=d2"]), Mode::Demo(Some("d2".into())));
    }

    #[test]
    fn simple_modes() {
        assert_eq!(mode(&["--hash-password"]), Mode::HashPassword);
        assert_eq!(mode(&["-V"]), Mode::Version);
        assert_eq!(mode(&["--version"]), Mode::Version);
        assert_eq!(mode(&["-h"]), Mode::Help);
        assert_eq!(mode(&["--help"]), Mode::Help);
    }

    #[test]
    fn conflicting_modes_are_errors() {
        let e = err(&["-t", "--demo"]);
        assert!(e.contains("-t and --demo cannot be combined"), "{e}");
        assert!(err(&["-V", "-h"]).contains("cannot be combined"));
        assert!(err(&["--hash-password", "-t"]).contains("cannot be combined"));
    }

    #[test]
    fn stray_arguments_are_errors() {
        let e = err(&["foo"]);
        assert!(e.contains("unexpected argument 'foo'"), "{e}");
        assert!(err(&["-t", "x"]).contains("unexpected argument 'x'"));
        assert!(err(&["--demo", "a", "b"]).contains("at most one directory"));
        assert!(err(&["--demo=a", "b"]).contains("at most one directory"));
        assert!(err(&["--demo="]).contains("non-empty"));
    }

    #[test]
    fn options_that_do_not_apply_are_errors() {
        assert!(err(&["-F", "-t"]).contains("-F does not apply to -t"));
        assert!(err(&["-F", "--demo"]).contains("-F does not apply"));
        assert!(err(&["-f", "x", "--hash-password"]).contains("-f does not apply"));
        assert!(err(&["-f", "x", "-V"]).contains("-f does not apply"));
        assert!(err(&["-f", ""]).contains("needs a file name"));
    }

    #[test]
    fn getopts_failures_are_phrased_and_point_to_help() {
        let e = err(&["-x"]);
        assert_eq!(e, "unknown option '-x'; try 'ironpop -h'");
        assert!(err(&["--bogus"]).contains("unknown option '--bogus'"));
        assert!(err(&["-f"]).contains("option '-f' needs a value"));
        assert!(err(&["-F", "-F"]).contains("more than once"));
        assert!(err(&["-f", "a", "-f", "b"]).contains("more than once"));
        assert!(err(&["--version=3"]).contains("does not take a value"));
        assert!(err(&["-x", "-i"]).ends_with("try 'ironpop -h'"));
    }

    #[test]
    fn inetd_mode_and_its_tls_flag() {
        let o = p(&["-i", "-f", "/etc/i.conf"]).unwrap();
        assert_eq!(o.mode, Mode::Inetd { tls: false });
        assert_eq!(o.config, PathBuf::from("/etc/i.conf"));
        assert_eq!(mode(&["-i", "--tls"]), Mode::Inetd { tls: true });
        assert!(err(&["--tls"]).contains("--tls only applies to -i"));
        // stderr is the client's socket in inetd mode.
        assert!(err(&["-i", "-F"]).contains("-F does not apply to -i"));
        assert!(err(&["-i", "-t"]).contains("cannot be combined"));
    }

    #[test]
    fn demo_takes_another_address() {
        let o = p(&["--demo", "d", "--listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(o.mode, Mode::Demo(Some("d".into())));
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(p(&["--demo"]).unwrap().listen, None);
        assert!(err(&["--listen", "127.0.0.1:1"]).contains("only applies to --demo"));
        assert!(err(&["-t", "--listen", "127.0.0.1:1"]).contains("only applies to --demo"));
        assert!(err(&["--demo", "--listen", "localhost"]).contains("needs an address"));
    }

    #[test]
    fn double_dash_ends_options() {
        assert!(err(&["--", "-t"]).contains("unexpected argument '-t'"));
        assert_eq!(
            mode(&["--demo", "--", "-dir"]),
            Mode::Demo(Some("-dir".into()))
        );
    }

    #[test]
    fn control_commands_take_a_config_file() {
        let o = p(&["--who", "-f", "/etc/x.conf"]).unwrap();
        assert_eq!(o.mode, Mode::Who);
        assert_eq!(o.config, PathBuf::from("/etc/x.conf"));
        assert_eq!(mode(&["--kick", "alice"]), Mode::Kick("alice".into()));
        assert_eq!(mode(&["--kick=192.0.2.1"]), Mode::Kick("192.0.2.1".into()));
        let stats = |format| Mode::Stats { format };
        assert_eq!(mode(&["--stats"]), stats(StatsFormat::Table));
        assert_eq!(
            mode(&["--stats", "--openmetrics"]),
            stats(StatsFormat::OpenMetrics)
        );
        assert_eq!(
            mode(&["--stats", "--prometheus"]),
            stats(StatsFormat::Prometheus)
        );
        assert!(err(&["--openmetrics"]).contains("only applies to --stats"));
        assert!(err(&["--prometheus"]).contains("only applies to --stats"));
        assert!(err(&["--stats", "--prometheus", "--openmetrics"])
            .contains("--openmetrics and --prometheus cannot be combined"));
        assert!(err(&["--kick"]).contains("needs a value"));
        assert!(err(&["--kick="]).contains("needs a user name"));
        assert!(err(&["--who", "--stats"]).contains("cannot be combined"));
        assert!(err(&["--who", "x"]).contains("unexpected argument"));
        assert!(err(&["--who", "-F"]).contains("-F does not apply"));
    }

    #[test]
    fn usage_mentions_every_option() {
        let u = usage();
        for o in [
            "-f FILE",
            "-F",
            "-t",
            "-i",
            "--tls",
            "--demo [DIR]",
            "--listen ADDR",
            "--hash-password",
            "--who",
            "--kick",
            "--stats",
            "--openmetrics",
            "--prometheus",
            "-V",
            "-h",
        ] {
            assert!(u.contains(o), "{o}");
        }
        assert!(u.contains(DEFAULT_CONFIG_PATH));
    }
}
