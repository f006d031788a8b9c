//! A file's identity and change stamp: what tells a cached reading of the passwd file or the shadow file from a stale one.

use std::os::unix::fs::MetadataExt;

/// What makes us re-read: a replaced file (new inode), or an edit in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// File timestamps come from a coarse clock (jiffies), so two edits in
    /// quick succession can leave size and times unchanged. Like git's
    /// "racy clean" rule, a reading made within 2 s of the file's last
    /// change is not trusted and the next use reads the file again.
    pub fn settled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        now.saturating_sub(self.mtime.0.max(self.ctime.0)) >= 2
    }
}

/// How loudly to log a re-read file's summary: a file re-read unchanged
/// (see [`Stamp::settled`]) is not news, so only a change is logged at info.
pub fn reread_log_level(news: bool) -> log::Level {
    if news {
        log::Level::Info
    } else {
        log::Level::Debug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_stamps_are_trusted() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let stamp = |m: i64, c: i64| Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (m, 0),
            ctime: (c, 0),
        };
        assert!(stamp(now - 100, now - 50).settled());
        assert!(!stamp(now - 100, now).settled());
        assert!(!stamp(now, now - 100).settled());
        assert!(!stamp(now + 3600, now + 3600).settled());
    }
}
