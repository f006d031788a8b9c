//! `passdb = pam` (built with `--features pam`), as root: a system user logs in through the `ironpop` PAM stack and the privileged helper.
//!
//! Needs root (useradd, the helper) and `/etc/pam.d/ironpop`: when the
//! machine has none, the test installs packaging/pam.d/ironpop for its
//! duration. Run: `cargo test --features pam --test it pam`.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::system::{setup_with, tcp, Client, Server, SystemUser};

const STACK: &str = "/etc/pam.d/ironpop";

/// /etc/pam.d/ironpop for the test's duration, if the machine has none.
struct Stack {
    installed: bool,
}

impl Stack {
    fn ensure() -> Stack {
        if Path::new(STACK).exists() {
            return Stack { installed: false };
        }
        let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/pam.d/ironpop");
        std::fs::copy(ours, STACK).expect("install /etc/pam.d/ironpop");
        Stack { installed: true }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.installed {
            let _ = std::fs::remove_file(STACK);
        }
    }
}

fn login(c: &mut Client<TcpStream>, user: &str, password: &str) -> String {
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    c.cmd(&format!("PASS {password}"))
}

#[test]
fn pam_login_through_the_privileged_helper() {
    require_root!();
    let _stack = Stack::ensure();
    let user = SystemUser::create("pam horse");
    let s = setup_with(&user, "pam", "");
    let server = Server::start(&s.conf);
    let addr = server.addr();
    server.wait_log("privileges dropped to user=nobody");

    let mut c = tcp(&addr);
    let ok = login(&mut c, &user.name, "pam horse");
    assert!(ok.starts_with("+OK maildrop has 1 messages"), "{ok}");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // pam_unix would sleep ~2 s on a failure; the helper's no-op
    // PAM_FAIL_DELAY takes that out (auth_fail_delay is 0 here).
    let mut c = tcp(&addr);
    let started = Instant::now();
    let refused = login(&mut c, &user.name, "wrong horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a failed PAM login took {:?}",
        started.elapsed()
    );
    let refused = login(&mut c, "no-such-pam-user", "pam horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");

    // pam_acct_mgmt: an expired account is refused with the right password.
    assert!(Command::new("usermod")
        .args(["-e", "1970-01-02", &user.name])
        .status()
        .unwrap()
        .success());
    let refused = login(&mut c, &user.name, "pam horse");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    server.wait_log("login refused by PAM");
    assert!(
        !server.log().contains("pam horse"),
        "no password in the log"
    );
}
