//! The uid and gid fields of a passwd-file entry: who owns a virtual user's spool.

use nix::unistd::{Gid, Group, Uid, User};

/// An entry's uid and gid fields; `None` where the field is empty.
///
/// The spool owner check is by uid only: the uid says whose mail a file
/// is, while the group of a spool is the MDA's business (`mail`, or the
/// user's group) and says nothing about whose mail it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryIds {
    /// The spool's owner; `None`: the daemon's `user`.
    pub uid: Option<Uid>,
    /// Recorded for completeness (Dovecot's layout); not checked.
    pub gid: Option<Gid>,
}

/// The uid and gid fields: empty, a number, or a name of the system's
/// (looked up when the file is read; re-read when it changes).
pub(crate) fn parse_ids(uid: &str, gid: &str) -> Result<EntryIds, String> {
    let uid = resolve(uid, "uid", "user", Uid::from_raw, |name| {
        User::from_name(name).map(|u| u.map(|u| u.uid))
    })?;
    if uid.is_some_and(|u| u.is_root()) {
        // The helper opens spools as root: a root-owned file at a virtual
        // user's path is never that user's mail (it could be any file).
        return Err(concat!(
            "uid 0 (root) cannot own a virtual user's spool; ",
            "name the mail owner's uid, or leave the field empty for the daemon's user"
        )
        .into());
    }
    let gid = resolve(gid, "gid", "group", Gid::from_raw, |name| {
        Group::from_name(name).map(|g| g.map(|g| g.gid))
    })?;
    Ok(EntryIds { uid, gid })
}

/// One id field (`what`: "uid" or "gid"): empty, a number, or the name
/// of a system `kind` ("user" or "group") that `lookup` finds.
fn resolve<T>(
    field: &str,
    what: &str,
    kind: &str,
    from_raw: fn(u32) -> T,
    lookup: impl FnOnce(&str) -> nix::Result<Option<T>>,
) -> Result<Option<T>, String> {
    Ok(match id_field(field, what)? {
        None => None,
        Some(Id::Number(n)) => Some(from_raw(n)),
        Some(Id::Name(name)) => match lookup(name) {
            Ok(Some(id)) => Some(id),
            Ok(None) => return Err(format!("{what} field {name:?} names no system {kind}")),
            Err(e) => {
                return Err(format!(
                    "cannot look up the {what} field's {kind} {name:?}: {e}"
                ))
            }
        },
    })
}

enum Id<'a> {
    Number(u32),
    Name(&'a str),
}

fn id_field<'a>(field: &'a str, what: &str) -> Result<Option<Id<'a>>, String> {
    let bad = || {
        format!(
            "{what} field {:?} is not a number or a name",
            field.escape_debug().to_string()
        )
    };
    match field.chars().next() {
        None => Ok(None),
        Some(c) if c.is_ascii_digit() => match field.parse::<u32>() {
            // (uid_t)-1 means "no owner" to chown(2); never a real owner.
            Ok(u32::MAX) | Err(_) => Err(bad()),
            Ok(n) => Ok(Some(Id::Number(n))),
        },
        Some(c)
            if (c.is_ascii_alphabetic() || c == '_')
                && field.len() <= 32
                && field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$')) =>
        {
            Ok(Some(Id::Name(field)))
        }
        Some(_) => Err(bad()),
    }
}
