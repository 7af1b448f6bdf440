//! Who a process is, from what /proc shows of it: whether it is a Gunicorn
//! arbiter (a master), the app it serves, the container and Kubernetes pod it
//! runs in, its pid inside its own PID namespace, and labels copied from its
//! environment. The rules are pure functions of /proc's text, unit-tested
//! here with real-looking inputs; [`Identity::read`] is the only read of
//! /proc (the scan's snapshot feeds [`classify`]).

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    fmt,
    str::FromStr,
};

use procfs::process::Process;
use regex::Regex;

/// Gunicorn's own executable names (`gunicorn3` is Debian's).
const EXECUTABLES: [&str; 2] = ["gunicorn", "gunicorn3"];

/// The prefix gunicorn's process title carries when setproctitle is
/// installed: `gunicorn: master [app]`, `gunicorn: worker [app]`.
const TITLE: &str = "gunicorn: ";

/// Options after which gunicorn does nothing but print and exit: such a
/// process never serves and is never a master.
const ONE_SHOT: [&str; 6] = [
    "--check-config",
    "--print-config",
    "--version",
    "-v",
    "--help",
    "-h",
];

/// Gunicorn's options that take no value; every other option does (when not
/// written `--opt=value`). Used to tell the app's positional argument from
/// an option's value.
const FLAGS: [&str; 18] = [
    "--reload",
    "--spew",
    "--check-config",
    "--print-config",
    "--preload",
    "--no-sendfile",
    "--reuse-port",
    "-D",
    "--daemon",
    "-R",
    "--enable-stdio-inheritance",
    "--capture-output",
    "--log-syslog",
    "--disable-redirect-access-to-syslog",
    "--strip-header-spaces",
    "--do-handshake-on-connect",
    "--suppress-ragged-eofs",
    "--no-control-socket",
];

/// What a process's title says of its role, when it has gunicorn's title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Title {
    Master,
    Worker,
    /// Another gunicorn title (an arbiter's helper, a future role).
    Other,
}

/// What follows `gunicorn: ` in a process title. setproctitle writes the
/// title over the arguments as one string, which may still read as several
/// (or be padded): the arguments are joined first.
fn title_text(cmdline: &[String]) -> Option<String> {
    let line = cmdline.join(" ");
    line.trim()
        .strip_prefix(TITLE)
        .map(|rest| rest.trim_end_matches(['\0', ' ']).to_string())
}

/// gunicorn's process title role, if `cmdline` is one.
pub fn title(cmdline: &[String]) -> Option<Title> {
    let rest = title_text(cmdline)?;
    Some(if rest.starts_with("master") {
        Title::Master
    } else if rest.starts_with("worker") {
        Title::Worker
    } else {
        Title::Other
    })
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_python(path: &str) -> bool {
    basename(path).starts_with("python")
}

/// Where gunicorn's own arguments start in `cmdline` (the index after
/// `gunicorn`, `python .../gunicorn` or `python -m gunicorn`), if it runs
/// gunicorn's command at all. A shell running `gunicorn app:app` in a
/// `-c` string is not gunicorn; the gunicorn it starts is.
pub fn gunicorn_args(cmdline: &[String]) -> Option<usize> {
    let first = cmdline.first()?;
    if EXECUTABLES.contains(&basename(first)) {
        return Some(1);
    }
    if !is_python(first) {
        return None;
    }
    script(cmdline).and_then(|(at, script)| match script {
        Script::Module(m) => (m == "gunicorn" || m.starts_with("gunicorn.")).then_some(at + 1),
        Script::File(f) => EXECUTABLES.contains(&basename(f)).then_some(at + 1),
    })
}

/// What a Python interpreter runs.
enum Script<'a> {
    Module(&'a str),
    File(&'a str),
}

/// The script (or `-m` module) a `python ...` command line runs, and the
/// index of its argument, past the interpreter's own options.
fn script(cmdline: &[String]) -> Option<(usize, Script<'_>)> {
    let mut i = 1;
    while let Some(arg) = cmdline.get(i) {
        match arg.as_str() {
            "-m" => return cmdline.get(i + 1).map(|m| (i + 1, Script::Module(m))),
            "-c" | "-" => return None,
            // Options with a separate value.
            "-X" | "-W" | "--check-hash-based-pycs" => i += 2,
            a if a.starts_with("-m") => return Some((i, Script::Module(&a[2..]))),
            a if a.starts_with("-c") => return None,
            a if a.starts_with('-') => i += 1,
            a => return Some((i, Script::File(a))),
        }
    }
    None
}

/// Is this a command that only prints and exits (`--check-config`, ...)?
/// (Only gunicorn's own arguments count: `python -v` is verbose imports.)
pub fn one_shot(cmdline: &[String]) -> bool {
    let args = gunicorn_args(cmdline).map_or(cmdline, |at| &cmdline[at..]);
    args.iter().any(|a| ONE_SHOT.contains(&a.as_str()))
}

/// `--match`: narrows discovery to the processes whose command line (or
/// title) matches, and finds custom `BaseApplication` scripts that gunicorn's
/// command-line rules cannot.
#[derive(Clone, Debug, Default)]
pub struct Matcher(Option<Regex>);

impl Matcher {
    /// No `--match`: gunicorn's own command lines and titles.
    pub const ANY: Matcher = Matcher(None);

    pub fn new(pattern: Option<&str>) -> Result<Matcher, regex::Error> {
        pattern.map(Regex::new).transpose().map(Matcher)
    }

    /// Whether `--match` was given (which may find a master of any program).
    pub fn narrows(&self) -> bool {
        self.0.is_some()
    }

    /// Is the process worth a look: its command line matches `--match`, or
    /// without one, it runs gunicorn or has its title?
    fn candidate(&self, cmdline: &[String]) -> bool {
        match &self.0 {
            Some(re) => re.is_match(&cmdline.join(" ")),
            None => title(cmdline).is_some() || gunicorn_args(cmdline).is_some(),
        }
    }
}

/// What /proc shows of a process and its family, for [`classify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub cmdline: Vec<String>,
    /// The parent's command line (empty if unreadable).
    pub parent: Vec<String>,
    pub children: Vec<Vec<String>>,
    pub session: Session,
}

/// A process's place in its session: `gunicorn --daemon` forks a child
/// that leads a new session (setsid) and forks the arbiter, and both
/// parents exit; only the arbiter is led by a gunicorn with its command
/// line (or by a leader that is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Session {
    /// Not read.
    #[default]
    Unknown,
    /// It leads its own session.
    Leads,
    /// Its session's leader runs this command line.
    LedBy(Vec<String>),
    /// Its session's leader is gone.
    LeaderGone,
}

/// Does this gunicorn daemonise (`-D`, `--daemon`)?
fn daemonizes(cmdline: &[String]) -> bool {
    let args = gunicorn_args(cmdline).map_or(cmdline, |at| &cmdline[at..]);
    args.iter().any(|a| a == "-D" || a == "--daemon")
}

/// Is a daemonising gunicorn the arbiter (not the process that exec'd, nor
/// the session leader it forks)?
fn daemon_arbiter(facts: &Facts) -> bool {
    match &facts.session {
        Session::Leads => false,
        Session::LedBy(leader) => *leader == facts.cmdline,
        Session::LeaderGone | Session::Unknown => true,
    }
}

/// What discovery makes of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A Gunicorn arbiter: watch it.
    Master,
    /// Looks like one but has forked no worker yet (starting, or the new
    /// master of a USR2 re-exec, followed through the old one): look again
    /// when it forks.
    Candidate,
    /// A worker (its master is watched, or will be).
    Worker,
    /// Gunicorn that only prints and exits (`--check-config`, ...).
    OneShot,
    /// Not gunicorn, or not matching `--match`.
    Other,
}

/// A worker of `master`: gunicorn forks it without exec, so it has its
/// master's command line, or gunicorn's worker title.
fn is_worker_of(child: &[String], master: &[String]) -> bool {
    child == master || title(child) == Some(Title::Worker)
}

/// Is this process a Gunicorn master? A master is a gunicorn command (or
/// title, or a `--match` hit) that forked workers; a process with its
/// parent's command line and no worker of its own is a worker (or a
/// re-exec'd master not started yet: the old master's watch follows it).
pub fn classify(facts: &Facts, matcher: &Matcher) -> Verdict {
    let cmdline = &facts.cmdline;
    if cmdline.is_empty() || !matcher.candidate(cmdline) {
        return Verdict::Other;
    }
    match title(cmdline) {
        Some(Title::Master) => return Verdict::Master,
        Some(Title::Worker) => return Verdict::Worker,
        Some(Title::Other) => return Verdict::Other,
        None => {}
    }
    if one_shot(cmdline) {
        return Verdict::OneShot;
    }
    if daemonizes(cmdline) && !daemon_arbiter(facts) {
        return Verdict::Candidate;
    }
    if facts.children.iter().any(|c| is_worker_of(c, cmdline)) {
        Verdict::Master
    } else if is_worker_of(cmdline, &facts.parent) {
        Verdict::Worker
    } else {
        Verdict::Candidate
    }
}

/// The `app` label: the name in gunicorn's title (its `proc_name`), else
/// the WSGI/ASGI app spec on the command line, else the script's name.
/// `reexec`: the master was started by a USR2 re-exec (GUNICORN_PID in its
/// environment), whose title carries `proc_name` + `.2`.
pub fn app_name(cmdline: &[String], reexec: bool) -> String {
    if let Some(name) = title_name(cmdline) {
        return match name.strip_suffix(".2") {
            Some(original) if reexec => original.to_string(),
            _ => name,
        };
    }
    if let Some(at) = gunicorn_args(cmdline)
        && let Some(spec) = app_spec(&cmdline[at..])
    {
        return spec.to_string();
    }
    let script = match cmdline.first() {
        Some(first) if is_python(first) => match script(cmdline) {
            Some((_, Script::Module(m))) => m,
            Some((_, Script::File(f))) => basename(f),
            None => basename(first),
        },
        Some(first) => basename(first),
        None => "",
    };
    script.strip_suffix(".py").unwrap_or(script).to_string()
}

/// The name between the brackets of `gunicorn: master [name]`.
fn title_name(cmdline: &[String]) -> Option<String> {
    let rest = title_text(cmdline)?;
    let open = rest.find('[')?;
    let close = rest.rfind(']')?;
    (close > open).then(|| rest[open + 1..close].trim().to_string())
}

/// Looks like `module`, `package.module` or `module:callable(...)`.
fn module_like(arg: &str) -> bool {
    let module = arg.split(':').next().unwrap_or("");
    module
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && module
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Gunicorn's APP_MODULE among its arguments: the positional arguments
/// (not an option, nor a value of one), preferring one with a `:`.
fn app_spec(args: &[String]) -> Option<&str> {
    let mut positional = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            positional.extend(args[i + 1..].iter().map(String::as_str));
            break;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            // `--opt=value`, `-w4` (a short option with its value attached)
            // and flags take no separate value.
            let attached = arg.contains('=') || (arg.len() > 2 && !arg.starts_with("--"));
            let takes_value = !attached && !FLAGS.contains(&arg.as_str());
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        positional.push(arg.as_str());
        i += 1;
    }
    positional.retain(|p| module_like(p));
    positional
        .iter()
        .find(|p| p.contains(':'))
        .or(positional.last())
        .copied()
}

/// The container and Kubernetes pod of a process, from its cgroup paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Prefixes of a container's cgroup directory under the runtimes' systemd
/// driver (or CRI-O's cgroupfs one), before the 64-hex id.
const RUNTIME_PREFIXES: [&str; 5] = [
    "cri-containerd-",
    "crio-",
    "docker-",
    "libpod-",
    "containerd-",
];

/// A container id in one cgroup path component: 64 hex digits, alone
/// (cgroupfs driver) or as `<runtime>-<id>.scope` (systemd driver).
/// CRI-O's `crio-conmon-<id>.scope` is its monitor, not the container.
fn container_id(component: &str) -> Option<&str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let id = RUNTIME_PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A pod uid in one component of a kubelet cgroup path: `pod<uid>`
/// (cgroupfs driver) or `kubepods[-<qos>]-pod<uid with _ for ->.slice`
/// (systemd driver).
fn pod_uid(component: &str) -> Option<String> {
    let uid = match component.strip_suffix(".slice") {
        Some(slice) => slice.strip_prefix("kubepods")?.rsplit_once("-pod")?.1,
        None => component.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    (shape
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then_some(uid)
}

/// The container and pod of a process from its cgroup paths (the lines of
/// /proc/<pid>/cgroup, cgroup v2's or v1's): the innermost container id,
/// and a pod uid only under the kubelet's `kubepods` tree. Paths seen from
/// another cgroup namespace (`/../../kubepods-...`) read the same.
pub fn container<'a>(paths: impl IntoIterator<Item = &'a str>) -> Container {
    for path in paths {
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some(id) = components.iter().rev().find_map(|c| container_id(c)) else {
            continue;
        };
        let kubelet = components.iter().any(|c| c.starts_with("kubepods"));
        return Container {
            id: Some(id.to_string()),
            pod_uid: kubelet
                .then(|| components.iter().find_map(|c| pod_uid(c)))
                .flatten(),
        };
    }
    Container::default()
}

/// The pid in the process's innermost PID namespace (the last of
/// /proc/<pid>/status's NSpid), when it differs from the host's.
pub fn ns_pid(nspid: &[i32]) -> Option<u32> {
    match nspid {
        [_, .., inner] => u32::try_from(*inner).ok(),
        _ => None,
    }
}

/// Labels of every series already, which `--label-from-env` may not take.
pub const RESERVED_LABELS: [&str; 20] = [
    "app",
    "master_pid",
    "ns_pid",
    "container_id",
    "pod_uid",
    "worker_id",
    "pid",
    "method",
    "status",
    "status_class",
    "error_type",
    "state",
    "hook",
    "reason",
    "signal",
    "kind",
    "listener",
    "le",
    "quantile",
    "job",
];

/// `--label-from-env [LABEL=]VAR`: copy VAR from the master's environment
/// into label LABEL (by default VAR in lower case: POD_NAME -> pod_name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvLabel {
    pub label: String,
    pub var: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvLabelError {
    #[error("`{0}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")]
    BadLabel(String),
    #[error("label `{0}` is one the exporter sets itself")]
    Reserved(String),
    #[error("no environment variable named in `{0}`")]
    NoVar(String),
}

fn label_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

impl FromStr for EnvLabel {
    type Err = EnvLabelError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (label, var) = match spec.split_once('=') {
            Some((label, var)) => (label.to_string(), var),
            None => (spec.to_ascii_lowercase(), spec),
        };
        if var.is_empty() || var.contains('\0') {
            return Err(EnvLabelError::NoVar(spec.into()));
        }
        if !label_name(&label) {
            return Err(EnvLabelError::BadLabel(label));
        }
        if RESERVED_LABELS.contains(&label.as_str()) {
            return Err(EnvLabelError::Reserved(label));
        }
        Ok(EnvLabel {
            label,
            var: var.to_string(),
        })
    }
}

impl fmt::Display for EnvLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.label, self.var)
    }
}

/// The `--label-from-env` labels a master's environment gives: a variable
/// it lacks gives no label (an empty value would be no label either).
pub fn env_labels(
    environ: &HashMap<OsString, OsString>,
    wanted: &[EnvLabel],
) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter_map(|w| {
            let value = environ.get(OsStr::new(&w.var))?.to_string_lossy();
            (!value.is_empty()).then(|| (w.label.clone(), value.into_owned()))
        })
        .collect()
}

/// The identity labels of a master, in discovery mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub app: String,
    pub master_pid: u32,
    /// Its pid in its own PID namespace, when it has one.
    pub ns_pid: Option<u32>,
    pub container: Container,
    /// From `--label-from-env`.
    pub env: Vec<(String, String)>,
}

impl Identity {
    /// Its labels, as `name=value` pairs for a log line.
    pub fn describe(&self) -> String {
        let mut out = format!("app={:?} master_pid={}", self.app, self.master_pid);
        let more = [
            ("ns_pid", self.ns_pid.map(|p| p.to_string())),
            ("container_id", self.container.id.clone()),
            ("pod_uid", self.container.pod_uid.clone()),
        ];
        for (name, value) in more.into_iter().filter_map(|(n, v)| Some((n, v?))) {
            out.push_str(&format!(" {name}={value}"));
        }
        for (name, value) in &self.env {
            out.push_str(&format!(" {name}={value:?}"));
        }
        out
    }

    /// The identity label names, in the order [`Identity::labels`] gives
    /// them: fixed at start, so every master has the same.
    pub fn label_names(wanted: &[EnvLabel]) -> Vec<String> {
        ["app", "master_pid", "ns_pid", "container_id", "pod_uid"]
            .into_iter()
            .map(String::from)
            .chain(wanted.iter().map(|w| w.label.clone()))
            .collect()
    }

    /// Its labels: every name of [`Identity::label_names`], empty where it
    /// has no value.
    pub fn labels(&self, wanted: &[EnvLabel]) -> Vec<(String, String)> {
        let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
        let values = [
            self.app.clone(),
            self.master_pid.to_string(),
            self.ns_pid.map_or_else(String::new, |p| p.to_string()),
            or_empty(&self.container.id),
            or_empty(&self.container.pod_uid),
        ]
        .into_iter()
        .chain(wanted.iter().map(|w| {
            self.env
                .iter()
                .find(|(label, _)| *label == w.label)
                .map_or_else(String::new, |(_, v)| v.clone())
        }));
        Self::label_names(wanted).into_iter().zip(values).collect()
    }

    /// Reads master `pid`'s identity from /proc (None if it is gone). A
    /// file it cannot read (its environ, without CAP_SYS_PTRACE) leaves
    /// those labels out.
    pub fn read(pid: u32, wanted: &[EnvLabel]) -> Option<Identity> {
        let process = Process::new(pid as i32).ok()?;
        let cmdline = process.cmdline().ok()?;
        let environ = process.environ().unwrap_or_default();
        let reexec = environ.contains_key(OsStr::new("GUNICORN_PID"));
        let cgroups = process.cgroups().map(|c| c.0).unwrap_or_default();
        let nspid = process.status().ok().and_then(|s| s.nspid);
        Some(Identity {
            app: app_name(&cmdline, reexec),
            master_pid: pid,
            ns_pid: nspid.as_deref().and_then(ns_pid),
            container: container(cgroups.iter().map(|c| c.pathname.as_str())),
            env: env_labels(&environ, wanted),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    fn facts(cmdline: &str, parent: &str, children: &[&str]) -> Facts {
        Facts {
            cmdline: v(cmdline),
            parent: v(parent),
            children: children.iter().map(|c| v(c)).collect(),
            session: Session::Unknown,
        }
    }

    #[test]
    fn a_daemon_is_its_arbiter_not_the_processes_that_start_it() {
        const DAEMON: &str = "/venv/bin/gunicorn --daemon -w 2 app:app";
        let any = Matcher::default();
        let at = |parent: &str, session: Session| Facts {
            session,
            ..facts(DAEMON, parent, &[DAEMON])
        };
        // The exec'd one (its session a shell's, or a supervisor's) forks
        // the session leader, which forks the arbiter: both only candidates.
        for (f, want) in [
            (at("bash", Session::LedBy(v("-bash"))), Verdict::Candidate),
            (at("bash", Session::Leads), Verdict::Candidate),
            (at(DAEMON, Session::Leads), Verdict::Candidate),
            // The arbiter: led by the leader its parent made, or orphaned.
            (at(DAEMON, Session::LedBy(v(DAEMON))), Verdict::Master),
            (at("/sbin/init", Session::LeaderGone), Verdict::Master),
        ] {
            assert_eq!(classify(&f, &any), want, "{f:?}");
        }
        // Not daemonising: the session does not matter.
        let plain = Facts {
            session: Session::Leads,
            ..facts(GUNICORN, "containerd-shim", &[GUNICORN])
        };
        assert_eq!(classify(&plain, &any), Verdict::Master);
    }

    const GUNICORN: &str =
        "/srv/venv/bin/python3 /srv/venv/bin/gunicorn -w 2 -b 0.0.0.0:8000 app:app";

    #[test]
    fn gunicorn_commands_are_recognised() {
        for (line, at) in [
            ("gunicorn app:app", Some(1)),
            ("/usr/bin/gunicorn3 -w 4 app:app", Some(1)),
            (GUNICORN, Some(2)),
            ("python3 -m gunicorn app:app", Some(3)),
            ("python3.12 -u -X dev -m gunicorn app:app", Some(6)),
            ("python -mgunicorn app:app", Some(2)),
            ("python3 -m gunicorn.app.wsgiapp app:app", Some(3)),
            // Not gunicorn: the exporter itself, a shell, python's other uses.
            ("/usr/bin/gunicorn-ebpf-exporter --all", None),
            ("sh -c gunicorn app:app", None),
            ("python3 -c import gunicorn", None),
            ("python3 server.py --name gunicorn", None),
            ("python3 -m http.server", None),
            ("sleep 1000", None),
            ("", None),
        ] {
            assert_eq!(gunicorn_args(&v(line)), at, "{line}");
        }
    }

    #[test]
    fn titles() {
        assert_eq!(title(&v("gunicorn: master [app:app]")), Some(Title::Master));
        assert_eq!(title(&v("gunicorn: worker [app:app]")), Some(Title::Worker));
        // One argument, as setproctitle leaves it.
        let one = vec!["gunicorn: master [web app]".to_string()];
        assert_eq!(title(&one), Some(Title::Master));
        assert_eq!(app_name(&one, false), "web app");
        assert_eq!(title(&v("gunicorn app:app")), None);
        assert_eq!(title(&v("/usr/bin/gunicorn: master [x]")), None);
        assert_eq!(title(&[]), None);
    }

    #[test]
    fn masters_workers_and_others() {
        let any = Matcher::default();
        let cases = [
            // A master with workers (no setproctitle: they share its line).
            (
                facts(GUNICORN, "/bin/bash", &[GUNICORN, GUNICORN]),
                Verdict::Master,
            ),
            // Its worker.
            (facts(GUNICORN, GUNICORN, &[]), Verdict::Worker),
            // A worker's own subprocess does not make it a master.
            (
                facts(GUNICORN, GUNICORN, &["/usr/bin/convert a.png b.jpg"]),
                Verdict::Worker,
            ),
            // The master of a USR2 re-exec, once it has workers.
            (facts(GUNICORN, GUNICORN, &[GUNICORN]), Verdict::Master),
            // Starting, no worker yet.
            (
                facts(GUNICORN, "/usr/lib/systemd/systemd", &[]),
                Verdict::Candidate,
            ),
            // Titles.
            (
                facts("gunicorn: master [web]", "containerd-shim", &[]),
                Verdict::Master,
            ),
            (
                facts("gunicorn: worker [web]", "gunicorn: master [web]", &[]),
                Verdict::Worker,
            ),
            (
                facts(
                    "/venv/bin/gunicorn -w 2 app:app",
                    "bash",
                    &["gunicorn: worker [app:app]"],
                ),
                Verdict::Master,
            ),
            // Never picked up.
            (
                facts("gunicorn --check-config app:app", "bash", &[]),
                Verdict::OneShot,
            ),
            (
                facts("python3 -m gunicorn --print-config app:app", "bash", &[]),
                Verdict::OneShot,
            ),
            (facts("gunicorn --version", "bash", &[]), Verdict::OneShot),
            (
                facts(
                    "python3 worker.py",
                    "bash",
                    &["python3 worker.py", "python3 worker.py"],
                ),
                Verdict::Other,
            ),
            (
                facts("/usr/bin/gunicorn-ebpf-exporter --all", "bash", &[]),
                Verdict::Other,
            ),
            (facts("", "bash", &[]), Verdict::Other),
        ];
        for (f, want) in cases {
            assert_eq!(classify(&f, &any), want, "{f:?}");
        }
    }

    #[test]
    fn match_narrows_and_finds_custom_scripts() {
        let web = Matcher::new(Some(r"web\.wsgi")).unwrap();
        let a = facts(
            "gunicorn -w 2 web.wsgi:application",
            "bash",
            &["gunicorn -w 2 web.wsgi:application"],
        );
        let b = facts("gunicorn -w 2 api:app", "bash", &["gunicorn -w 2 api:app"]);
        assert_eq!(classify(&a, &web), Verdict::Master);
        assert_eq!(classify(&b, &web), Verdict::Other);
        // A custom BaseApplication script: found with --match only.
        let custom = facts("python3 /srv/serve.py", "bash", &["python3 /srv/serve.py"]);
        assert_eq!(classify(&custom, &Matcher::default()), Verdict::Other);
        let serve = Matcher::new(Some("serve\\.py$")).unwrap();
        assert_eq!(classify(&custom, &serve), Verdict::Master);
        // --check-config stays out, matched or not.
        let check = facts("gunicorn --check-config web.wsgi:application", "bash", &[]);
        assert_eq!(classify(&check, &web), Verdict::OneShot);
        assert!(Matcher::new(Some("(")).is_err());
    }

    #[test]
    fn app_names() {
        for (line, reexec, want) in [
            ("gunicorn: master [shop]", false, "shop"),
            ("gunicorn: master [app:app.2]", true, "app:app"),
            ("gunicorn: master [app:app.2]", false, "app:app.2"),
            ("gunicorn: master [  spaced name ]   ", false, "spaced name"),
            (GUNICORN, false, "app:app"),
            ("gunicorn app:app -w 2 -b 0.0.0.0:8000", false, "app:app"),
            (
                "gunicorn --preload -k gevent --bind=unix:/run/g.sock proj.wsgi:application",
                false,
                "proj.wsgi:application",
            ),
            (
                "gunicorn -w4 -k uvicorn.workers.UvicornWorker main:create_app()",
                false,
                "main:create_app()",
            ),
            (
                "python3 -m gunicorn -c conf.py myproject.wsgi",
                false,
                "myproject.wsgi",
            ),
            ("gunicorn -c /etc/gunicorn.conf.py", false, "gunicorn"),
            ("python3 /srv/serve.py --port 80", false, "serve"),
            ("python3 -m mypkg.server", false, "mypkg.server"),
        ] {
            assert_eq!(app_name(&v(line), reexec), want, "{line}");
        }
    }

    const ID: &str = "4f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

    #[test]
    fn containers_and_pods_from_cgroup_paths() {
        let uid = "0c6c3a57-95cf-4d4a-9c1c-2f5ad7e1b3f0";
        let uid_ = uid.replace('-', "_");
        let pod = |id: bool| Container {
            id: id.then(|| ID.to_string()),
            pod_uid: Some(uid.to_string()),
        };
        let bare = Container {
            id: Some(ID.to_string()),
            pod_uid: None,
        };
        for (path, want) in [
            // systemd driver: containerd, CRI-O, guaranteed QoS.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                pod(true),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"
                ),
                pod(true),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                pod(true),
            ),
            // Seen from the exporter's own cgroup namespace.
            (
                format!("/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                pod(true),
            ),
            // A sub-cgroup inside the container.
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope/container"),
                pod(true),
            ),
            // cgroupfs driver: containerd, CRI-O, guaranteed.
            (format!("/kubepods/burstable/pod{uid}/{ID}"), pod(true)),
            (
                format!("/kubepods/besteffort/pod{uid}/crio-{ID}"),
                pod(true),
            ),
            (format!("/kubepods/pod{uid}/{ID}"), pod(true)),
            // CRI-O's monitor (conmon) is not the container: no labels.
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope"),
                Container::default(),
            ),
            // Containers outside Kubernetes: no pod.
            (format!("/system.slice/docker-{ID}.scope"), bare.clone()),
            (format!("/docker/{ID}"), bare.clone()),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                bare.clone(),
            ),
            (format!("/system.slice/pod{uid}/{ID}"), bare.clone()),
            // Not in a container.
            (
                "/user.slice/user-1000.slice/session-2.scope".into(),
                Container::default(),
            ),
            (
                "/system.slice/gunicorn.service".into(),
                Container::default(),
            ),
            ("/".into(), Container::default()),
            // Too short or not hex.
            (format!("/docker/{}", &ID[1..]), Container::default()),
            (
                format!("/docker/{}", ID.replace('a', "g")),
                Container::default(),
            ),
        ] {
            assert_eq!(container([path.as_str()]), want, "{path}");
        }
    }

    #[test]
    fn cgroup_v1_lines_find_the_container() {
        let lines = [
            "/".to_string(),
            format!("/kubepods/burstable/pod0c6c3a57-95cf-4d4a-9c1c-2f5ad7e1b3f0/{ID}"),
        ];
        let c = container(lines.iter().map(String::as_str));
        assert_eq!(c.id.as_deref(), Some(ID));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("0c6c3a57-95cf-4d4a-9c1c-2f5ad7e1b3f0")
        );
    }

    #[test]
    fn pod_uid_shape_is_checked() {
        assert_eq!(pod_uid("pod1234"), None);
        assert_eq!(pod_uid("kubepods-burstable.slice"), None);
        assert_eq!(pod_uid("kubepods.slice"), None);
        assert_eq!(pod_uid("podzzzzzzzz-95cf-4d4a-9c1c-2f5ad7e1b3f0"), None);
    }

    #[test]
    fn namespace_pids() {
        assert_eq!(ns_pid(&[4242]), None);
        assert_eq!(ns_pid(&[4242, 1]), Some(1));
        assert_eq!(ns_pid(&[4242, 300, 7]), Some(7));
        assert_eq!(ns_pid(&[]), None);
    }

    #[test]
    fn label_from_env_specs() {
        assert_eq!(
            "POD_NAME".parse(),
            Ok(EnvLabel {
                label: "pod_name".into(),
                var: "POD_NAME".into()
            })
        );
        assert_eq!(
            "namespace=POD_NAMESPACE".parse(),
            Ok(EnvLabel {
                label: "namespace".into(),
                var: "POD_NAMESPACE".into()
            })
        );
        assert_eq!(
            "APP".parse::<EnvLabel>(),
            Err(EnvLabelError::Reserved("app".into()))
        );
        assert!(matches!(
            "9x=Y".parse::<EnvLabel>(),
            Err(EnvLabelError::BadLabel(_))
        ));
        assert!(matches!(
            "__x=Y".parse::<EnvLabel>(),
            Err(EnvLabelError::BadLabel(_))
        ));
        assert!(matches!(
            "x=".parse::<EnvLabel>(),
            Err(EnvLabelError::NoVar(_))
        ));
        assert!(matches!(
            "".parse::<EnvLabel>(),
            Err(EnvLabelError::NoVar(_))
        ));
    }

    #[test]
    fn labels_copied_from_the_environment() {
        let environ: HashMap<OsString, OsString> =
            [("POD_NAME", "web-7d9f"), ("EMPTY", ""), ("PATH", "/bin")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
        let wanted: Vec<EnvLabel> = ["POD_NAME", "ns=POD_NAMESPACE", "EMPTY"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            env_labels(&environ, &wanted),
            vec![("pod_name".to_string(), "web-7d9f".to_string())]
        );
    }

    #[test]
    fn this_process_has_an_identity() {
        let me = Identity::read(std::process::id(), &[]).expect("own /proc entry");
        assert_eq!(me.master_pid, std::process::id());
        assert!(!me.app.is_empty());
        let shown = me.describe();
        assert!(
            shown.contains(&format!("master_pid={}", me.master_pid)),
            "{shown}"
        );
        assert_eq!(Identity::read(u32::MAX - 1, &[]), None);
    }

    /// Every master carries every identity label, empty where it has none,
    /// in one order.
    #[test]
    fn labels_are_the_same_names_for_every_master() {
        let wanted: Vec<EnvLabel> = ["POD_NAME", "namespace=POD_NAMESPACE"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let host = Identity {
            app: "shop.wsgi:application".into(),
            master_pid: 4242,
            ..Identity::default()
        };
        let pod = Identity {
            app: "api".into(),
            master_pid: 77,
            ns_pid: Some(1),
            container: Container {
                id: Some("ab".repeat(32)),
                pod_uid: Some("0f0e".into()),
            },
            env: vec![("pod_name".into(), "api-7d9".into())],
        };
        let names = Identity::label_names(&wanted);
        assert_eq!(
            names,
            [
                "app",
                "master_pid",
                "ns_pid",
                "container_id",
                "pod_uid",
                "pod_name",
                "namespace"
            ]
        );
        let values = |id: &Identity| -> Vec<String> {
            let labels = id.labels(&wanted);
            assert_eq!(
                labels.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                names.iter().collect::<Vec<_>>()
            );
            labels.into_iter().map(|(_, v)| v).collect()
        };
        assert_eq!(
            values(&host),
            ["shop.wsgi:application", "4242", "", "", "", "", ""]
        );
        assert_eq!(
            values(&pod),
            ["api", "77", "1", &"ab".repeat(32), "0f0e", "api-7d9", ""]
        );
    }
}
