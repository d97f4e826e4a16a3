//! `events`: one stats record (`--stats`), or a stream of them every `--interval` with OOM events
//! as they happen, until the container's init exits.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::cli::{Cli, EventsArgs};
use crate::error::{Error, Result};
use crate::linux::cgroup_events::{Event, OomWatch, Stats};
use crate::linux::cgroups::Cgroup;
use crate::state::{process_start_time, status_of, ContainerDir, State, Status};

pub fn run(cli: &Cli, args: &EventsArgs) -> Result<i32> {
    let interval = parse_interval(&args.interval)?;
    // The lock is let go at once: a stream must not keep `delete` or `kill` waiting.
    let state = {
        let dir = ContainerDir::open(&cli.root, &args.id)?;
        let state = dir.load()?;
        if status_of(&dir, &state) == Status::Stopped {
            return Err(Error::invalid(format!(
                "container {:?} is not running",
                args.id
            )));
        }
        state
    };
    let cgroup = Cgroup::for_state(&state)?;
    if args.stats {
        print_stats(&cgroup, &state)?;
        return Ok(0);
    }
    stream(&cgroup, &state, interval)
}

fn stream(cgroup: &Cgroup, state: &State, interval: Duration) -> Result<i32> {
    let pidfd = sys::pidfd_open(state.pid)
        .map_err(|e| Error::os(format!("pidfd_open {}", state.pid), e))?;
    if process_start_time(state.pid) != Some(state.pid_start_time) {
        return Ok(0);
    }
    let mut oom = match OomWatch::new(&state.cgroup_path) {
        Ok(w) => Some(w),
        Err(e) => {
            crate::log::warn(&format!("no OOM events: {e}"));
            None
        }
    };
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            // As runc: a failed read is logged and the stream goes on.
            if let Err(e) = print_stats(cgroup, state) {
                crate::log::error(&e.to_string());
            }
            next = now + interval;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = oom.as_ref().and_then(OomWatch::fd) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::from(e).context("waiting for events")),
        }
        let exited = fds[0].any().unwrap_or(false);
        drop(fds);
        if let Some(w) = oom.as_mut() {
            for _ in 0..w.take() {
                print(&Event::<()> {
                    typ: "oom",
                    id: &state.id,
                    data: None,
                })?;
            }
        }
        if exited {
            return Ok(0);
        }
    }
}

fn print_stats(cgroup: &Cgroup, state: &State) -> Result<()> {
    let stats = Stats::new(cgroup.stats()?, &state.cgroup_path);
    print(&Event {
        typ: "stats",
        id: &state.id,
        data: Some(stats),
    })
}

fn print<T: serde::Serialize>(event: &Event<'_, T>) -> Result<()> {
    let line = serde_json::to_string(event).map_err(|e| Error::invalid(e.to_string()))?;
    println!("{line}");
    Ok(())
}

/// A Go-style duration as runc takes it (`5s`, `500ms`, `1m`, `1.5h`); a bare number is seconds.
fn parse_interval(s: &str) -> Result<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let secs = num.parse::<f64>().map(|n| n * scale).unwrap_or(f64::NAN);
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Error::invalid(format!(
            "--interval {s:?}: not a positive duration like 5s or 500ms"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_like_go_durations() {
        assert_eq!(parse_interval("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(parse_interval("2").ok(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_interval("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_interval("1m").ok(), Some(Duration::from_secs(60)));
        for bad in ["", "0", "-1s", "5x", "s"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }
}
