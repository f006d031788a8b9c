//! Dropping root for good: exactly `user`, `group` and the user's /etc/group memberships, no new privileges, not dumpable, no core files, and a check that root cannot come back.

use std::ffi::CString;

use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{self, Gid, Group, Uid, User};

use super::error::PrivsepError;

/// Who the daemon runs as once root is dropped: user, group and the
/// user's supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: Uid,
    pub group: String,
    pub gid: Gid,
    /// `gid` plus the groups /etc/group lists `user` in (as initgroups(3)
    /// would): that is how an administrator grants ssl-cert, so that a
    /// SIGHUP can re-read the snakeoil key after the drop.
    pub groups: Vec<Gid>,
}

fn refuse(detail: String) -> PrivsepError {
    PrivsepError::Privileges(detail)
}

/// The system's answer `found` for the `kind` ("user" or "group") `name`;
/// `advice` says what to do when there is none.
fn existing<T>(
    found: nix::Result<Option<T>>,
    kind: &str,
    name: &str,
    advice: &str,
) -> Result<T, PrivsepError> {
    found
        .map_err(|e| refuse(format!("cannot look up {kind} {name:?}: {e}")))?
        .ok_or_else(|| refuse(format!("{kind} {name:?} does not exist; {advice}")))
}

/// Looks up `user` and `group`; refuses root, which would serve sessions
/// with every privilege.
pub fn resolve(user: &str, group: &str) -> Result<RunAs, PrivsepError> {
    let u = existing(
        User::from_name(user),
        "user",
        user,
        &format!("create it (e.g. adduser --system {user}) or set `user` in the config"),
    )?;
    let g = existing(
        Group::from_name(group),
        "group",
        group,
        "set `group` in the config",
    )?;
    if u.uid.is_root() || g.gid.as_raw() == 0 {
        return Err(refuse(format!(
            "user = {user} / group = {group} would serve sessions as root; \
             name an unprivileged account (the default is ironpop / mail)"
        )));
    }
    let name = CString::new(user).map_err(|_| refuse(format!("bad user name {user:?}")))?;
    let mut groups = unistd::getgrouplist(&name, g.gid)
        .map_err(|e| refuse(format!("cannot list the groups of user {user:?}: {e}")))?;
    if groups.iter().any(|gid| gid.as_raw() == 0) {
        return Err(refuse(format!(
            "user {user:?} is a member of the root group in /etc/group; \
             sessions must not run with it"
        )));
    }
    groups.sort_by_key(|gid| gid.as_raw());
    groups.dedup();
    Ok(RunAs {
        user: user.to_owned(),
        uid: u.uid,
        group: group.to_owned(),
        gid: g.gid,
        groups,
    })
}

/// Becomes `id` for good. Must run while the process is single-threaded
/// (glibc changes the ids of every thread, but only this is simple to
/// reason about) and after everything that needs root is done.
pub fn drop_to(id: &RunAs) -> Result<(), PrivsepError> {
    let sys = |what: &'static str| move |e: nix::errno::Errno| PrivsepError::system(what, e);
    // Supplementary groups first: they go with root's right to set them.
    unistd::setgroups(&id.groups).map_err(sys("set the supplementary groups"))?;
    unistd::setresgid(id.gid, id.gid, id.gid).map_err(sys("change group (setresgid)"))?;
    unistd::setresuid(id.uid, id.uid, id.uid).map_err(sys("change user (setresuid)"))?;
    nix::sys::prctl::set_no_new_privs().map_err(sys("set no_new_privs"))?;
    // Not dumpable: no core dump, no ptrace by the same user, /proc/PID
    // files root's. Memory may hold passwords in transit.
    nix::sys::prctl::set_dumpable(false).map_err(sys("clear the dumpable flag"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(sys("disable core files"))?;
    verify(id)
}

/// Checks the drop took: every id is the target's, the group list is
/// exactly the resolved one, and asking for root back fails.
pub fn verify(id: &RunAs) -> Result<(), PrivsepError> {
    let uids = unistd::getresuid().map_err(|e| PrivsepError::system("read the user ids", e))?;
    let gids = unistd::getresgid().map_err(|e| PrivsepError::system("read the group ids", e))?;
    let groups = unistd::getgroups().map_err(|e| PrivsepError::system("read the groups", e))?;
    if [uids.real, uids.effective, uids.saved] != [id.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [id.gid; 3]
        || groups.iter().any(|g| !id.groups.contains(g))
    {
        return Err(refuse(format!(
            "privilege drop incomplete: uids {uids:?}, gids {gids:?}, groups {groups:?}"
        )));
    }
    if unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok()
        || unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).is_ok()
    {
        return Err(refuse(
            "root could be regained after the privilege drop".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_missing_accounts_are_refused() {
        let e = resolve("root", "root").unwrap_err().to_string();
        assert!(e.contains("would serve sessions as root"), "{e}");
        let e = resolve("no-such-user-ironpop", "root")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "user \"no-such-user-ironpop\" does not exist; create it \
                 (e.g. adduser --system no-such-user-ironpop) or set `user` in the config"
            ),
            "{e}"
        );
        let e = resolve("nobody", "no-such-group-ironpop")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("group \"no-such-group-ironpop\" does not exist; set `group` in the config"),
            "{e}"
        );
    }

    #[test]
    fn verify_notices_a_missing_drop() {
        // The test process is not the target account.
        let me = unistd::getuid();
        let other = RunAs {
            user: "x".into(),
            uid: Uid::from_raw(me.as_raw().wrapping_add(12345)),
            group: "x".into(),
            gid: Gid::from_raw(54321),
            groups: vec![Gid::from_raw(54321)],
        };
        let e = verify(&other).unwrap_err().to_string();
        assert!(e.contains("privilege drop incomplete"), "{e}");
    }
}
