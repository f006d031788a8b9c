//! What the daemon answers on its control socket: `WHO`, `KICK` and `STATS` from the session table and the counters.
//!
//! Here, not in `control/`, because it reads the daemon's session table:
//! `control/` (the protocol, the socket server, the client) imports
//! nothing of the daemon.

use std::sync::Arc;
use std::time::Instant;

use super::sessions::SessionTable;
use crate::control::protocol::{ok_reply, who_reply, Request, SESSIONS, UPTIME};
use crate::control::server::Answer;
use crate::counters;

/// The answer function of the daemon started at `started`.
pub fn answerer(table: Arc<SessionTable>, started: Instant) -> Answer {
    Box::new(move |request| answer(request, &table, started))
}

/// The framed reply to `request`.
pub fn answer(request: &Request, table: &SessionTable, started: Instant) -> Vec<u8> {
    match request {
        Request::Who => who_reply(&table.who()),
        Request::Kick(target) => {
            let kicked = table.kick(target);
            log::info!("control: kick {target}: {kicked} sessions ended");
            ok_reply(&[kicked.to_string()])
        }
        Request::Stats => {
            let mut lines = vec![
                format!("{UPTIME} {}", started.elapsed().as_secs()),
                format!("{SESSIONS} {}", table.active()),
            ];
            lines.extend(
                counters::ALL
                    .iter()
                    .map(|&c| format!("{} {}", c.name(), counters::get(c))),
            );
            ok_reply(&lines)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{decode_stat, parse_reply, Target, WhoRow};
    use crate::pop3::State;

    #[test]
    fn who_kick_and_stats_from_the_table() {
        let table = Arc::new(SessionTable::new(0));
        let started = Instant::now();
        let ticket = table.admit("192.0.2.1".parse().unwrap(), None).unwrap();
        let live = Arc::clone(&ticket.live);
        live.connected("192.0.2.1:5000".parse().unwrap(), 110);
        live.progress(2, 50, State::Transaction, Some("alice"));
        let _unstarted = table.admit("192.0.2.2".parse().unwrap(), None).unwrap();

        let who = answer(&Request::Who, &table, started);
        let body = parse_reply(&who).unwrap();
        assert_eq!(body.len(), 1, "sessions not yet started are not shown");
        let row = WhoRow::decode(body[0]).unwrap();
        assert_eq!(
            (row.user.as_str(), row.local_port, row.commands),
            ("alice", 110, 2)
        );

        let kick = |t: &str| {
            let reply = answer(&Request::Kick(Target::parse(t).unwrap()), &table, started);
            parse_reply(&reply).unwrap().concat()
        };
        assert_eq!(kick("bob"), "0");
        assert!(!live.is_kicked());
        assert_eq!(kick("alice"), "1");
        assert!(live.is_kicked());

        let stats = answer(&Request::Stats, &table, started);
        let body = parse_reply(&stats).unwrap();
        let stats: Vec<(&str, u64)> = body.iter().map(|l| decode_stat(l).unwrap()).collect();
        assert_eq!(stats[1], (SESSIONS, 2));
        assert_eq!(stats.len(), 2 + counters::ALL.len());
    }
}
