//! Node deaths in a cluster behind HAProxy: a node killed (its whole pid namespace, SIGKILL) during a QUIT update or while holding an idle session; a survivor serves the user and recovers the spool.

use std::net::Ipv4Addr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{
    cluster_can_run, login, serving, start, state_file, user_sent, PASSWORD, USER,
};
use crate::harness::*;

/// Node kills during QUIT updates.
const KILLS: usize = 30;
/// QUIT updates timed without a kill first.
const CALIBRATION: usize = 3;

/// Which node logs the login it just served (the log arrives a moment
/// after the `+OK`).
fn wait_serving(cluster: &crate::cluster::fixture::Cluster, marks: &[usize]) -> usize {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let served = serving(cluster, marks);
        if let [one] = served[..] {
            return one;
        }
        assert!(
            served.is_empty() && Instant::now() < deadline,
            "one node serves a login: {served:?}\n{}",
            cluster.all_logs()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A dotlock left by a killed node stays until it is
/// `DOTLOCK_STALE_AFTER` old (no pid or hostname shortcut for another
/// host's lock); the test ages it, if there is one, rather than wait.
fn age_leftover_dotlock(spool: &Path, dead: &str) {
    let lock = spool.with_extension("lock");
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return;
    };
    assert!(
        text.contains(&format!("ironpop@{dead}")),
        "the leftover dotlock is the dead node's: {text:?}"
    );
    let old = SystemTime::now() - ironpop::limits::DOTLOCK_STALE_AFTER - Duration::from_secs(60);
    let f = std::fs::File::options().write(true).open(&lock).unwrap();
    f.set_modified(old).unwrap();
}

/// 120 messages of 16 KiB: a 2 MiB spool whose journaled update takes
/// long enough to be killed in.
fn big_messages() -> Vec<Vec<u8>> {
    (0..120)
        .map(|i| {
            let mut m = message(i);
            for _ in 0..200 {
                m.extend_from_slice(&[b'x'; 79]);
                m.push(b'\n');
            }
            m
        })
        .collect()
}

/// Whether `path` exists within `limit` (polled: the journal of a QUIT
/// update lives for milliseconds).
fn appears(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(100));
    }
    true
}

/// When to kill. Every other round, uniformly in `[0, window)` after QUIT
/// is sent (any moment: before, during or after the update); the others
/// uniformly in `[0, journaled)` after the journal appears, so that the
/// journaled phase is hit whatever the machine's load makes of the rest.
/// Both start at 1.5 times the medians of the calibration QUITs and follow
/// the load: shorter after a kill that came after the update, longer
/// after one that came before it.
#[derive(Default)]
struct KillClock {
    window: Duration,
    journaled: Duration,
    quits: Vec<(Duration, Duration)>,
}

impl KillClock {
    fn calibrate(&mut self, sent: Instant, journal_seen: Option<Instant>) {
        let done = Instant::now();
        let journaled = journal_seen.map_or(Duration::ZERO, |j| done - j);
        self.quits.push((done - sent, journaled));
        let mut q = self.quits.clone();
        q.sort();
        self.window = q[q.len() / 2].0 * 3 / 2;
        q.sort_by_key(|&(_, j)| j);
        self.journaled = q[q.len() / 2].1 * 3 / 2;
    }

    /// Sleeps until the moment to kill; returns it (after QUIT, or after
    /// the journal appeared when `targeted`).
    fn wait(&self, targeted: bool, sent: Instant, journal: &Path, rng: &mut Rng) -> Duration {
        let (from, range) = if targeted && appears(journal, self.window * 4) {
            (Instant::now(), self.journaled)
        } else {
            (sent, self.window)
        };
        let delay = Duration::from_micros(rng.below(range.as_micros() as u64));
        thread::sleep(delay.saturating_sub(from.elapsed()));
        delay
    }

    fn was_early(&mut self, targeted: bool) {
        if !targeted {
            self.window = self.window * 5 / 4;
        }
    }

    fn was_late(&mut self, targeted: bool) {
        if targeted {
            self.journaled = self.journaled * 4 / 5;
        } else {
            self.window = self.window * 4 / 5;
        }
    }
}

#[test]
fn node_killed_during_quit_update_is_recovered_by_a_survivor() {
    if !cluster_can_run() {
        return;
    }
    // A dotlock from a dead node on another host is not broken early: the
    // first time one is left, a login is refused until it is aged.
    let mut cluster = start("lock_timeout = 1", false);
    let spool = cluster.spool_path(USER);
    let msgs = big_messages();
    let original = mbox(&msgs);
    // The kill moments' seed is printed; IRONPOP_TEST_SEED replays them.
    let mut rng = Rng::seeded();
    let journal = state_file(&cluster, "journal");
    let mut clock = KillClock::default();
    let (mut journals, mut untouched, mut complete, mut fresh_lock_checked) = (0, 0, 0, false);
    for round in 0..CALIBRATION + KILLS {
        cluster.write_spool(USER, &original);
        let marks = cluster.marks();
        let mut c = login(cluster.front, Ipv4Addr::new(127, 0, 5, 1));
        let victim = wait_serving(&cluster, &marks);
        // Delete the first message (a journaled update) and a random
        // selection of the rest (numbers from 1, as in DELE).
        let mut deleted = vec![1];
        c.ok("DELE 1");
        for n in 2..=msgs.len() {
            if rng.below(3) == 0 {
                c.ok(&format!("DELE {n}"));
                deleted.push(n);
            }
        }
        let expected = mbox_without(&msgs, &deleted);
        c.send("QUIT");
        let sent = Instant::now();
        if round < CALIBRATION {
            let journaled = appears(&journal, Duration::from_secs(2)).then(Instant::now);
            assert_ok(&c.line(), "QUIT");
            clock.calibrate(sent, journaled);
            assert_bytes_eq(&std::fs::read(&spool).unwrap(), &expected, "update");
            continue;
        }
        let targeted = round % 2 == 0;
        let delay = clock.wait(targeted, sent, &journal, &mut rng);
        let dead = cluster.nodes[victim].name.clone();
        cluster.nodes[victim].kill();
        let acked = matches!(c.read_raw_line(), Ok(Some(l)) if l.starts_with(b"+OK"));
        let journal_left = journal.exists();
        journals += usize::from(journal_left);
        let dotlock = spool.with_extension("lock");
        if dotlock.exists() && !fresh_lock_checked {
            fresh_lock_checked = true;
            let mut c = user_sent(cluster.front, Ipv4Addr::new(127, 0, 5, 2));
            let reply = c.cmd(&format!("PASS {PASSWORD}"));
            assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
            assert!(dotlock.exists(), "a fresh dotlock of another host stays");
        }
        age_leftover_dotlock(&spool, &dead);
        // The next login goes to a survivor, which recovers first.
        let marks = cluster.marks();
        let c = login(cluster.front, Ipv4Addr::new(127, 0, 5, 3));
        let survivor = wait_serving(&cluster, &marks);
        assert_ne!(survivor, victim);
        let now = std::fs::read(&spool).unwrap();
        if now == original && !acked {
            untouched += 1;
            if !journal_left {
                clock.was_early(targeted);
            }
        } else {
            assert_bytes_eq(
                &now,
                &expected,
                "the spool after a kill: complete or untouched",
            );
            complete += 1;
            if !journal_left {
                clock.was_late(targeted);
            }
        }
        if journal_left {
            assert!(
                cluster.nodes[survivor]
                    .log_since(marks[survivor])
                    .contains("an interrupted update was"),
                "{}",
                cluster.all_logs()
            );
        }
        c.quit();
        assert_eq!(std::fs::read(&spool).unwrap(), now, "a QUIT without DELE");
        cluster.restart(victim);
        eprintln!(
            "round {round}: killed {dead} {delay:?} {} (windows now {:?} / {:?}), \
             journal {journal_left}, acked {acked}",
            if targeted {
                "after the journal appeared"
            } else {
                "after QUIT"
            },
            clock.window,
            clock.journaled,
        );
    }
    eprintln!(
        "{KILLS} kills: {journals} left a journal, {untouched} untouched, {complete} complete"
    );
    assert!(
        journals >= KILLS / 4,
        "too few kills hit the update ({journals} of {KILLS}): the test is not testing"
    );
    assert!(
        fresh_lock_checked,
        "no kill left a dotlock: the kills missed the update"
    );
    let state = std::fs::read_dir(cluster.state_dir())
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".index")
        })
        .count();
    assert_eq!(
        state, 1,
        "only the session lock file (and the index) is left"
    );
}

#[test]
fn node_killed_holding_an_idle_session_frees_the_mailbox_at_once() {
    if !cluster_can_run() {
        return;
    }
    let mut cluster = start("", false);
    cluster.write_spool(USER, &mbox(&messages(2)));
    let marks = cluster.marks();
    let mut idle = login(cluster.front, Ipv4Addr::new(127, 0, 6, 1));
    let holder = wait_serving(&cluster, &marks);
    idle.ok("STAT");
    // Still held: another login is [IN-USE].
    let mut c = user_sent(cluster.front, Ipv4Addr::new(127, 0, 6, 2));
    let reply = c.cmd(&format!("PASS {PASSWORD}"));
    assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
    cluster.nodes[holder].kill();
    let killed = Instant::now();
    let marks = cluster.marks();
    let mut c = login(cluster.front, Ipv4Addr::new(127, 0, 6, 3));
    let served_in = killed.elapsed();
    let survivor = wait_serving(&cluster, &marks);
    assert_ne!(survivor, holder);
    eprintln!("a survivor served the user {served_in:?} after the kill");
    assert_eq!(c.ok_lines("LIST").len(), 2);
    c.quit();
    assert!(
        served_in < Duration::from_secs(2),
        "served {served_in:?} after the kill"
    );
    assert!(idle.expect_closed(IO_TIMEOUT).is_empty());
}

#[test]
fn a_node_recovers_a_dead_nodes_update_when_it_starts() {
    if !cluster_can_run() {
        return;
    }
    let mut cluster = start("lock_timeout = 1", false);
    let spool = cluster.spool_path(USER);
    let journal = state_file(&cluster, "journal");
    let msgs = big_messages();
    let original = mbox(&msgs);
    let expected = mbox_without(&msgs, &[1, 3]);
    // A node killed as soon as its update's journal exists (a few tries:
    // the kill can still come after the update).
    let mut victim = None;
    for attempt in 0..10 {
        cluster.write_spool(USER, &original);
        let marks = cluster.marks();
        let mut c = login(cluster.front, Ipv4Addr::new(127, 0, 9, 1));
        let node = wait_serving(&cluster, &marks);
        c.ok("DELE 1");
        c.ok("DELE 3");
        c.send("QUIT");
        appears(&journal, IO_TIMEOUT);
        cluster.nodes[node].kill();
        if journal.exists() {
            victim = Some(node);
            break;
        }
        eprintln!("attempt {attempt}: the update finished before the kill");
        cluster.restart(node);
    }
    let victim = victim.expect("a kill during the update within 10 tries");
    age_leftover_dotlock(&spool, &cluster.nodes[victim].name.clone());
    // Another node restarts, as after a reboot, and recovers the update
    // before it serves anyone: nobody logs in meanwhile.
    let other = (victim + 1) % cluster.nodes.len();
    cluster.nodes[other].stop();
    let marks = cluster.marks();
    let before = cluster.nodes[other]
        .log()
        .matches("startup recovery: ")
        .count();
    cluster.restart(other);
    assert!(
        cluster.nodes[other].wait_log("startup recovery: ", before + 1, IO_TIMEOUT),
        "{}",
        cluster.all_logs()
    );
    assert!(!journal.exists(), "{}", cluster.all_logs());
    let now = std::fs::read(&spool).unwrap();
    assert!(
        now == original || now == expected,
        "the spool is as before or as after the update"
    );
    assert!(serving(&cluster, &marks).is_empty());
}
