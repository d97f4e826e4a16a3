//! LXC's command protocol (liblxc 5: src/lxc/commands.{c,h}, commands_utils.c), the subset that
//! `lxc-info`, `lxc-stop`, `lxc-wait` and pve-container's `PVE::LXC::Command` use: the abstract
//! socket's name, the request and response layouts as they travel over the socket, the command
//! numbers, and what LXC's monitor answers to each. Pure: no I/O, so every answer is unit-tested.
//!
//! On the wire a request is `struct lxc_cmd_req { lxc_cmd_t cmd; int datalen; const void *data; }`
//! sent as raw bytes (the pointer is meaningless to the receiver), followed by `datalen` bytes of
//! data. A response is `struct lxc_cmd_rsp { int ret; int datalen; void *data; }`, then `datalen`
//! bytes. Small integer answers (init pid, state) travel *inside* the pointer field with
//! `datalen` 0 (LXC's INT_TO_PTR). Native byte order and pointer size: client and server share the
//! host.

use std::mem::size_of;

/// `sizeof(struct lxc_cmd_req)` and `sizeof(struct lxc_cmd_rsp)`: two ints and a pointer.
pub const HEADER_LEN: usize = 8 + size_of::<usize>();
/// LXC_CMD_DATA_MAX (MAXPATHLEN * 2): LXC drops a request announcing more data than this.
pub const DATA_MAX: usize = 8192;
/// sizeof(sockaddr_un.sun_path) minus the leading NUL of an abstract name and a trailing NUL LXC
/// keeps for printing: names this long or longer are hashed.
const NAME_ROOM: usize = 108 - 2;

// lxc_cmd_t (commands.h): the numbers this monitor serves. Every other number below CMD_MAX gets
// -ENOSYS; lxc-info also sends GET_LIMIT_CGROUP_FD (25) and GET_LIMIT_CGROUP2_FD (20) and falls
// back from that answer to GET_LIMIT_CGROUP.
pub const STOP: u32 = 2;
pub const GET_STATE: u32 = 3;
pub const GET_INIT_PID: u32 = 4;
pub const GET_CGROUP: u32 = 6;
pub const GET_CONFIG_ITEM: u32 = 7;
pub const GET_NAME: u32 = 8;
pub const GET_LXCPATH: u32 = 9;
pub const ADD_STATE_CLIENT: u32 = 10;
pub const GET_INIT_PIDFD: u32 = 18;
pub const GET_LIMIT_CGROUP: u32 = 19;
/// LXC_CMD_MAX: LXC closes the connection without an answer for any number from here on.
pub const CMD_MAX: u32 = 26;

/// lxc_state_t (state.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum LxcState {
    Stopped = 0,
    Starting = 1,
    Running = 2,
    Frozen = 6,
}
/// MAX_STATE: the number of states, also the "not yet, wait for a message" answer of
/// ADD_STATE_CLIENT.
pub const MAX_STATE: usize = 8;

/// The abstract socket name (without the leading NUL) LXC connects to for container `name` under
/// `lxcpath`: `<lxcpath>/<name>/command`, or, when that does not fit, `lxc/<hash>/command` with
/// the FNV-1a 64 hash of `<lxcpath>/<name>` (lxc_make_abstract_socket_name).
pub fn socket_name(lxcpath: &str, name: &str) -> String {
    let plain = format!("{lxcpath}/{name}/command");
    if plain.len() < NAME_ROOM {
        return plain;
    }
    let hash = fnv1a_64(format!("{lxcpath}/{name}").as_bytes());
    format!("lxc/{hash:016x}/command")
}

/// FNV-1a, 64 bit (LXC's fnv_64a_buf with FNV1A_64_INIT).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fixed part of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// lxc_cmd_t is an enum of non-negative values, which C compilers make unsigned.
    pub cmd: u32,
    pub datalen: i32,
}

impl Header {
    pub fn parse(raw: &[u8; HEADER_LEN]) -> Header {
        Header {
            cmd: u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
            datalen: i32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]),
        }
    }

    /// How many data bytes follow the header, or None when LXC would drop the request unanswered
    /// (more than LXC_CMD_DATA_MAX). A negative datalen means no data, as in LXC.
    pub fn data_len(&self) -> Option<usize> {
        let len = usize::try_from(self.datalen).unwrap_or(0);
        (len <= DATA_MAX).then_some(len)
    }
}

/// What the monitor knows about its container, as the answers need it.
pub trait Container {
    fn name(&self) -> &str;
    fn lxcpath(&self) -> &str;
    fn init_pid(&self) -> i32;
    fn state(&self) -> LxcState;
    /// The cgroup path (relative to the hierarchy's mount point, with a leading '/') for a v1
    /// controller, or for the unified hierarchy when `controller` is None; None when the
    /// container has no cgroup there.
    fn cgroup_path(&self, controller: Option<&str>) -> Option<String>;
}

/// What to do with a complete request.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes, then close the connection.
    Reply(Vec<u8>),
    /// Close the connection without an answer (LXC's way with requests it cannot serve).
    Close,
    /// Kill the container; keep the connection until it is gone (lxc-stop waits for the close).
    Stop,
    /// Send a pidfd of the init along with a {0, 0} answer (SCM_RIGHTS), then close.
    SendInitPidfd,
    /// Register for state changes: reply "wait" (MAX_STATE) and keep the connection; send a
    /// state message when one of the states in the mask is reached.
    WatchStates([bool; MAX_STATE]),
}

/// A response header with `value` in the pointer field (INT_TO_PTR: sign-extended).
pub fn reply_value(ret: i32, value: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&ret.to_ne_bytes());
    out.extend_from_slice(&0i32.to_ne_bytes());
    out.extend_from_slice(&(value as isize).to_ne_bytes());
    out
}

/// A response header announcing `data`, then the data.
fn reply_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&0i32.to_ne_bytes());
    out.extend_from_slice(&(data.len() as i32).to_ne_bytes());
    out.extend_from_slice(&0usize.to_ne_bytes());
    out.extend_from_slice(data);
    out
}

fn reply_string(s: &str) -> Vec<u8> {
    let mut data = s.as_bytes().to_vec();
    data.push(0);
    reply_data(&data)
}

/// LXC's validate_string_request: the data must be one NUL-terminated string.
fn string_arg(data: &[u8]) -> Option<&str> {
    let (last, body) = data.split_last()?;
    (*last == 0 && !body.contains(&0))
        .then(|| std::str::from_utf8(body).ok())
        .flatten()
}

/// The answer LXC's monitor gives to the complete request `header` + `data`.
pub fn answer(header: Header, data: &[u8], ct: &dyn Container) -> Action {
    match header.cmd {
        GET_INIT_PID => Action::Reply(reply_value(0, i64::from(ct.init_pid()))),
        GET_STATE => Action::Reply(reply_value(0, ct.state() as i64)),
        GET_CGROUP | GET_LIMIT_CGROUP => {
            // Without data: the unified hierarchy. With data: it must be one C string, else
            // -EINVAL; an unknown controller gets no answer (LXC's callback returns -1).
            let controller = if data.is_empty() {
                None
            } else {
                match string_arg(data) {
                    Some(c) => Some(c),
                    None => return Action::Reply(reply_value(-libc::EINVAL, 0)),
                }
            };
            match ct.cgroup_path(controller) {
                Some(path) => Action::Reply(reply_string(&path)),
                None => Action::Close,
            }
        }
        GET_NAME => Action::Reply(reply_string(ct.name())),
        GET_LXCPATH => Action::Reply(reply_string(ct.lxcpath())),
        // The container has no LXC configuration to read items from: LXC answers -1 for an item
        // it cannot produce.
        GET_CONFIG_ITEM => Action::Reply(reply_value(-1, 0)),
        STOP => Action::Stop,
        GET_INIT_PIDFD => Action::SendInitPidfd,
        ADD_STATE_CLIENT => {
            // LXC answers {0, 0} (which clients read as STOPPED) to a malformed registration.
            if data.len() != 4 * MAX_STATE {
                return Action::Reply(reply_value(0, 0));
            }
            let mut mask = [false; MAX_STATE];
            for (i, m) in mask.iter_mut().enumerate() {
                let v = i32::from_ne_bytes([
                    data[4 * i],
                    data[4 * i + 1],
                    data[4 * i + 2],
                    data[4 * i + 3],
                ]);
                *m = v != 0;
            }
            let now = ct.state();
            if mask[now as usize] {
                Action::Reply(reply_value(0, now as i64))
            } else {
                Action::WatchStates(mask)
            }
        }
        // Numbers LXC does not know: it drops the connection unanswered.
        n if n >= CMD_MAX => Action::Close,
        // Commands LXC knows but this monitor does not serve (ttys, seccomp, freeze, fds of
        // cgroups...): -ENOSYS, which liblxc reads as "not supported" and falls back from (to
        // GET_LIMIT_CGROUP for cgroup files, to kill(2) for the init's pidfd).
        _ => Action::Reply(reply_value(-libc::ENOSYS, 0)),
    }
}

/// The answer to ADD_STATE_CLIENT when the client is registered.
pub fn reply_watching() -> Vec<u8> {
    reply_value(0, MAX_STATE as i64)
}

/// `struct lxc_msg { lxc_msg_type_t type; char name[NAME_MAX + 1]; int value; }` of type
/// lxc_msg_state, sent to registered state clients.
pub fn state_message(name: &str, state: LxcState) -> Vec<u8> {
    let mut out = vec![0u8; 4 + 256 + 4];
    let n = name.len().min(255);
    out[4..4 + n].copy_from_slice(&name.as_bytes()[..n]);
    out[260..264].copy_from_slice(&(state as i32).to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_TTY_FD: u32 = 0;
    const GET_LIMIT_CGROUP_FD: u32 = 25;

    /// A request as a client sends it.
    fn request(cmd: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + data.len());
        out.extend_from_slice(&cmd.to_ne_bytes());
        out.extend_from_slice(&(data.len() as i32).to_ne_bytes());
        out.extend_from_slice(&0usize.to_ne_bytes());
        out.extend_from_slice(data);
        out
    }

    struct Fake;
    impl Container for Fake {
        fn name(&self) -> &str {
            "123"
        }
        fn lxcpath(&self) -> &str {
            "/var/lib/lxc"
        }
        fn init_pid(&self) -> i32 {
            4242
        }
        fn state(&self) -> LxcState {
            LxcState::Running
        }
        fn cgroup_path(&self, controller: Option<&str>) -> Option<String> {
            match controller {
                Some("memory") | None => Some("/lxc/123".into()),
                _ => None,
            }
        }
    }

    fn ask(cmd: u32, data: &[u8]) -> Action {
        let raw = request(cmd, data);
        let header = Header::parse(raw[..HEADER_LEN].try_into().unwrap());
        answer(header, &raw[HEADER_LEN..], &Fake)
    }

    fn reply(action: Action) -> (i32, i32, i64, Vec<u8>) {
        let Action::Reply(b) = action else {
            panic!("not a reply: {action:?}")
        };
        let ret = i32::from_ne_bytes(b[0..4].try_into().unwrap());
        let len = i32::from_ne_bytes(b[4..8].try_into().unwrap());
        let ptr = isize::from_ne_bytes(b[8..HEADER_LEN].try_into().unwrap()) as i64;
        (ret, len, ptr, b[HEADER_LEN..].to_vec())
    }

    #[test]
    fn the_socket_name_is_lxcs_for_short_and_long_paths() {
        assert_eq!(
            socket_name("/var/lib/lxc", "100"),
            "/var/lib/lxc/100/command"
        );
        // A path that does not fit is hashed; the value is FNV-1a 64 of "<lxcpath>/<name>".
        let long = format!("/{}", "x".repeat(100));
        let name = socket_name(&long, "100");
        let want = format!(
            "lxc/{:016x}/command",
            fnv1a_64(format!("{long}/100").as_bytes())
        );
        assert_eq!(name, want);
        // Known FNV-1a 64 vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // The limit: 105 characters still fit, 106 do not.
        let fits = format!("/{}", "y".repeat(105 - "/1/command".len() - 1));
        assert_eq!(socket_name(&fits, "1").len(), 105);
        let too_long = format!("{fits}y");
        assert!(socket_name(&too_long, "1").starts_with("lxc/"));
    }

    #[test]
    fn pid_and_state_travel_in_the_pointer_field() {
        assert_eq!(reply(ask(GET_INIT_PID, b"")), (0, 0, 4242, vec![]));
        assert_eq!(reply(ask(GET_STATE, b"")), (0, 0, 2, vec![]));
    }

    #[test]
    fn cgroup_paths_are_nul_terminated_strings() {
        let (ret, len, _, data) = reply(ask(GET_LIMIT_CGROUP, b"memory\0"));
        assert_eq!((ret, len), (0, 9));
        assert_eq!(data, b"/lxc/123\0");
        assert_eq!(reply(ask(GET_CGROUP, b"")).3, b"/lxc/123\0");
        // Not one C string: -EINVAL. An unknown controller: no answer.
        assert_eq!(reply(ask(GET_CGROUP, b"memory")).0, -libc::EINVAL);
        assert_eq!(reply(ask(GET_CGROUP, b"me\0mory\0")).0, -libc::EINVAL);
        assert_eq!(ask(GET_CGROUP, b"cpu\0"), Action::Close);
    }

    #[test]
    fn unknown_and_unserved_commands_get_lxcs_answers() {
        assert_eq!(ask(CMD_MAX, b""), Action::Close);
        assert_eq!(ask(u32::MAX, b""), Action::Close);
        assert_eq!(reply(ask(GET_LIMIT_CGROUP_FD, &[0; 80])).0, -libc::ENOSYS);
        assert_eq!(reply(ask(GET_TTY_FD, b"")).0, -libc::ENOSYS);
        assert_eq!(reply(ask(GET_CONFIG_ITEM, b"lxc.net.0.type\0")).0, -1);
        assert_eq!(ask(STOP, b""), Action::Stop);
        assert_eq!(ask(GET_INIT_PIDFD, b""), Action::SendInitPidfd);
    }

    #[test]
    fn oversized_data_is_refused_before_it_is_read() {
        let h = Header {
            cmd: GET_CGROUP,
            datalen: DATA_MAX as i32 + 1,
        };
        assert_eq!(h.data_len(), None);
        assert_eq!(Header { datalen: -5, ..h }.data_len(), Some(0));
    }

    #[test]
    fn state_clients_wait_unless_the_state_is_already_reached() {
        let mut states = [0i32; MAX_STATE];
        states[LxcState::Stopped as usize] = 1;
        let data: Vec<u8> = states.iter().flat_map(|s| s.to_ne_bytes()).collect();
        let mut mask = [false; MAX_STATE];
        mask[0] = true;
        assert_eq!(ask(ADD_STATE_CLIENT, &data), Action::WatchStates(mask));
        states[LxcState::Running as usize] = 1;
        let data: Vec<u8> = states.iter().flat_map(|s| s.to_ne_bytes()).collect();
        assert_eq!(reply(ask(ADD_STATE_CLIENT, &data)).2, 2);
        let msg = state_message("123", LxcState::Stopped);
        assert_eq!(msg.len(), 264);
        assert_eq!(&msg[4..8], b"123\0");
    }
}
