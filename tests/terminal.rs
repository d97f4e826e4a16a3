//! Terminals: `process.terminal` with a console socket served by the test (as
//! conmon and the containerd shim serve one), `exec --tty`, and `run`
//! attaching the caller's terminal.

mod common;

use common::console::{ConsoleSocket, Pty};
use common::*;
use serde_json::json;
use std::fs;

/// A shell script that reports what its terminal looks like, then reads a
/// line typed at it and exits with code 3.
const TTY_REPORT: &str = "tty; stty size; \
     [ /dev/console -ef \"$(tty)\" ] && echo console-is-the-pty; \
     : </dev/tty && echo has-controlling-tty; \
     echo ready; read line; echo \"got:$line\"; exit 3";

fn terminal_container(c: &mut Container) {
    c.set("/process/terminal", json!(true))
        .set(
            "/process/consoleSize",
            json!({ "height": 33, "width": 111 }),
        )
        .sh(TTY_REPORT);
}

/// Lines of pty output, without the `\r` of the pty's line ends.
fn pty_lines(output: &str) -> Vec<&str> {
    output.lines().map(|l| l.trim_end_matches('\r')).collect()
}

/// `create --console-socket` of `c`, which must succeed; the pty master sent over the socket.
#[track_caller]
fn create_with_console_socket(c: &Container) -> Pty {
    let sock = ConsoleSocket::new(&c.host);
    c.create_with(&["--console-socket", &sock.path_str()])
        .assert_ok();
    sock.receive(WAIT)
}

/// `create --console-socket SOCK` fails and leaves nothing behind; ours' error does `what`.
#[track_caller]
fn create_with_console_socket_fails(
    c: &Container,
    sock: &str,
    what: &str,
    says: impl FnOnce(&str) -> bool,
) {
    let out = c.create_with(&["--console-socket", sock]);
    out.assert_fail();
    check_our_message(&out, what, says);
    c.assert_no_debris(None);
}

/// Asserts what `TTY_REPORT` printed before "ready".
#[track_caller]
fn assert_tty_report(output: &str, size: &str) {
    let lines = pty_lines(output);
    let ready = lines
        .iter()
        .position(|l| *l == "ready")
        .unwrap_or_else(|| panic!("no ready line:\n{output:?}"));
    let report = &lines[..ready];
    assert!(
        report.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "`tty` did not name a pty:\n{output:?}"
    );
    assert!(
        report.contains(&size),
        "stty size is not {size}:\n{output:?}"
    );
    assert!(report.contains(&"console-is-the-pty"), "{output:?}");
    assert!(report.contains(&"has-controlling-tty"), "{output:?}");
}

/// With process.terminal and --console-socket, `create` sends the pty master
/// over the socket; the process has the pty as stdio, /dev/console and
/// controlling terminal, with the spec's consoleSize; what is typed at the
/// master reaches the process.
#[test]
fn create_sends_the_pty_master_over_the_console_socket() {
    let mut c = Container::new();
    terminal_container(&mut c);
    let mut pty = create_with_console_socket(&c);
    assert_eq!(c.status(), "created");
    c.start().assert_ok();
    let out = pty.read_until("ready", WAIT);
    assert_tty_report(&out, "33 111");
    pty.write("hello there\n");
    let out = pty.read_until("got:hello there", WAIT);
    // The line discipline echoes what was typed.
    assert!(out.contains("hello there\r\n"), "no echo:\n{out:?}");
    pty.read_to_end(WAIT);
    c.wait_status("stopped", WAIT);
    c.delete().assert_ok();
    c.assert_no_debris(None);
}

/// runc sends the pty's name along with the fd; the slave is in the
/// container's own devpts (not the host's).
#[test]
fn the_pty_lives_in_the_container_devpts() {
    let mut c = Container::new();
    c.set("/process/terminal", json!(true))
        .sh("tty; ls -1 /dev/pts; echo done; sleep 1000");
    let mut pty = create_with_console_socket(&c);
    c.start().assert_ok();
    let out = pty.read_until("done", WAIT);
    let lines = pty_lines(&out);
    // A fresh devpts instance: the container's pty is its first.
    assert_eq!(lines[0], "/dev/pts/0", "{out:?}");
    assert!(lines[1..].contains(&"ptmx"), "{out:?}");
    if is_ours() {
        assert_eq!(pty.name, "/dev/pts/0", "name sent with the fd");
    }
    // The slave is not one of the host's ptys: another devpts instance.
    use std::os::unix::fs::MetadataExt;
    let init = c.pid();
    let slave = fs::metadata(format!("/proc/{init}/fd/0")).unwrap();
    let host_devpts = fs::metadata("/dev/pts/ptmx").unwrap();
    assert_ne!(
        slave.dev(),
        host_devpts.dev(),
        "the pty is in the host's devpts"
    );
}

/// Without consoleSize the window size is left alone (0 0), as in runc.
#[test]
fn without_console_size_the_window_is_zero_sized() {
    let mut c = Container::new();
    c.set("/process/terminal", json!(true))
        .sh("stty size 2>&1 || true; echo done");
    let mut pty = create_with_console_socket(&c);
    c.start().assert_ok();
    let out = pty.read_until("done", WAIT);
    assert!(!out.contains("33 111"), "{out:?}");
}

/// `exec -t --console-socket` in the foreground: the process gets a pty whose
/// master comes over the socket; exec returns the exit code. (runc refuses
/// --console-socket without --detach; we allow it.)
#[test]
fn exec_tty_with_console_socket() {
    if !is_ours() {
        eprintln!("skipped: runc refuses --console-socket without --detach");
        return;
    }
    let mut c = Container::new();
    c.start_idle();
    let sock = ConsoleSocket::new(&c.host);
    let s = sock.path_str();
    let r = c.spawn_exec(
        &["-t", "--console-socket", &s],
        &[
            "sh",
            "-c",
            "echo ready; read line; echo \"got:$line\"; stty size; tty; \
             : </dev/tty && echo has-controlling-tty; exit 3",
        ],
    );
    let mut pty = sock.receive(WAIT);
    pty.read_until("ready", WAIT);
    // exec has no consoleSize on its command line: the engine sets the size
    // through the master, and the process sees it.
    sys::set_window_size(std::os::fd::AsFd::as_fd(&pty.master), 44, 155)
        .expect("TIOCSWINSZ on the master");
    pty.write("typed\n");
    let out = pty.read_until("has-controlling-tty", WAIT);
    let lines = pty_lines(&out);
    let got = lines
        .iter()
        .position(|l| *l == "got:typed")
        .expect("got line");
    assert_eq!(lines[got + 1], "44 155", "{out:?}");
    assert!(lines[got + 2].starts_with("/dev/pts/"), "{out:?}");
    let res = r.wait(WAIT);
    assert_eq!(res.code, 3, "{res}");
}

/// `exec -t -d --console-socket --pid-file`: the runtime returns at once, the
/// process keeps running on its pty.
#[test]
fn exec_tty_detached_with_console_socket() {
    let mut c = Container::new();
    c.start_idle();
    let sock = ConsoleSocket::new(&c.host);
    let pid_file = c.host.join("exec.pid");
    let out = c.exec_in(
        &[
            "-t",
            "-d",
            "--console-socket",
            &sock.path_str(),
            "--pid-file",
            &pid_file.to_string_lossy(),
        ],
        &[
            "sh",
            "-c",
            "echo ready; read line; echo \"got:$line\"; sleep 1000",
        ],
    );
    out.assert_ok();
    let mut pty = sock.receive(WAIT);
    let pid: i64 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    pty.read_until("ready", WAIT);
    pty.write("later\n");
    pty.read_until("got:later", WAIT);
    assert!(c.cgroup_procs("pids").contains(&pid));
}

/// `exec -t` in the foreground without a console socket attaches the caller's
/// terminal (here the pty of `script`).
#[test]
fn exec_tty_attaches_the_callers_terminal() {
    let mut c = Container::new();
    c.start_idle();
    let cmd = format!(
        "{} --root {} exec -t {} sh -c 'tty; : </dev/tty && echo has-controlling-tty; exit 6'",
        c.runtime.display(),
        c.root.display(),
        c.id
    );
    let out = host_cmd("/usr/bin/script", &["-qec", &cmd, "/dev/null"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    assert!(out.stdout.contains("has-controlling-tty"), "{out}");
}

/// `run` with process.terminal in the foreground attaches the caller's
/// terminal: the container's output comes back, and so does its exit code.
#[test]
fn run_with_terminal_attaches_the_callers_terminal() {
    let mut c = Container::new();
    c.set("/process/terminal", json!(true)).sh(
        "tty; [ /dev/console -ef \"$(tty)\" ] && echo console-is-the-pty; \
         : </dev/tty && echo has-controlling-tty; exit 5",
    );
    c.write_config();
    let cmd = format!(
        "{} --root {} run --bundle {} {}",
        c.runtime.display(),
        c.root.display(),
        c.bundle.display(),
        c.id
    );
    let out = host_cmd("/usr/bin/script", &["-qec", &cmd, "/dev/null"]);
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stdout.contains("/dev/pts/0"), "{out}");
    assert!(out.stdout.contains("console-is-the-pty"), "{out}");
    assert!(out.stdout.contains("has-controlling-tty"), "{out}");
    c.assert_no_debris(None);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn create_with_a_console_socket_that_does_not_exist_fails_cleanly() {
    let mut c = Container::new();
    terminal_container(&mut c);
    let m = c.host.join("no-such.sock").to_string_lossy().into_owned();
    create_with_console_socket_fails(&c, &m, "name the socket path", |e| e.contains(&m));
}

#[test]
fn create_with_a_console_socket_that_is_a_regular_file_fails_cleanly() {
    let mut c = Container::new();
    terminal_container(&mut c);
    let file = c.host.join("not-a-socket");
    fs::write(&file, "").unwrap();
    let f = file.to_string_lossy().into_owned();
    create_with_console_socket_fails(&c, &f, "say it is not a socket", |e| {
        e.contains(&f) && e.contains("socket")
    });
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "",
        "the file was written"
    );
}

#[test]
fn create_with_terminal_but_no_console_socket_fails_cleanly() {
    let mut c = Container::new();
    terminal_container(&mut c);
    let out = c.create();
    out.assert_fail();
    check_our_message(&out, "ask for --console-socket", |e| {
        e.contains("--console-socket") && e.contains("terminal")
    });
    c.assert_no_debris(None);
}

#[test]
fn create_with_console_socket_but_no_terminal_is_rejected() {
    if skip_unless_ours() {
        // runc 1.1 silently ignores the socket.
        return;
    }
    let mut c = Container::new();
    c.sh("true");
    let sock = ConsoleSocket::new(&c.host);
    create_with_console_socket_fails(&c, &sock.path_str(), "name process.terminal", |e| {
        e.contains("process.terminal")
    });
    assert!(!sock.try_accept(), "the runtime connected anyway");
}

/// A console socket whose listener is gone (a stale socket file): clear
/// error, no debris.
#[test]
fn create_with_a_stale_console_socket_fails_cleanly() {
    let mut c = Container::new();
    terminal_container(&mut c);
    let path = c.host.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let p = path.to_string_lossy().into_owned();
    create_with_console_socket_fails(&c, &p, "name the socket path", |e| e.contains(&p));
}

#[test]
fn exec_tty_with_a_bad_console_socket_fails_cleanly() {
    let mut c = Container::new();
    let init = c.start_idle();
    let file = c.host.join("plain-file");
    fs::write(&file, "").unwrap();
    for (sock, what) in [
        (c.host.join("no-such.sock"), "name the socket path"),
        (file, "say it is not a socket"),
    ] {
        let s = sock.to_string_lossy();
        let out = c.exec_in(&["-t", "-d", "--console-socket", &s], &["true"]);
        out.assert_fail();
        check_our_message(&out, what, |e| e.contains(&*s));
    }
    assert_eq!(c.cgroup_procs("pids"), [init]);
}
