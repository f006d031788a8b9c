#!/usr/bin/env bash
# Install test of the Debian package on this machine, as root: build the
# .deb with cargo-deb, lintian it, dpkg -i it, run the installed daemon the
# way ironpop.service does (/usr/sbin/ironpop -F, packaged config), log in
# as a fresh system user over POP3S and over STLS with curl, stop it,
# dpkg --purge, and check that nothing of the package is left.
#
# usage: packaging/test-install.sh [--no-login] [--deb FILE]
#   --no-login  skip starting the daemon and the logins (for a tree whose
#               daemon cannot serve system accounts over TLS yet)
#   --deb FILE  test FILE instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."

LOGIN=1
DEB=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-login) LOGIN=0 ;;
        --deb) DEB="$2"; shift ;;
        *) echo "usage: $0 [--no-login] [--deb FILE]" >&2; exit 2 ;;
    esac
    shift
done

TEST_USER=ipoptest
TEST_PASS='Test-pass-42'
WORK="$(mktemp -d /tmp/ironpop-install.XXXXXX)"
DAEMON_PID=""
# Whether the group ironpop was made by this run's package (removed at the end).
MADE_GROUP=0
getent group ironpop >/dev/null || MADE_GROUP=1

step() { printf '\n--> install test: %s\n' "$*"; }
fail() { printf 'install test FAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    if getent passwd "$TEST_USER" >/dev/null; then
        userdel -r "$TEST_USER" >/dev/null 2>&1 || true
    fi
    rm -f "/var/mail/$TEST_USER"
    if dpkg-query -W -f='${Status}' ironpop 2>/dev/null | grep -q installed; then
        dpkg --purge ironpop >/dev/null 2>&1 || true
    fi
    # The package keeps its system user on purge (as documented); this test
    # created it, so it removes it to leave the machine as it found it.
    if getent passwd ironpop >/dev/null \
        && [ "$(getent passwd ironpop | cut -d: -f6)" = /var/lib/ironpop ]; then
        deluser --system --quiet ironpop >/dev/null 2>&1 || true
    fi
    # Made by the daemon this test started outside systemd (under systemd it
    # is the service's RuntimeDirectory=, removed at stop).
    rm -f /run/ironpop/control
    rmdir /run/ironpop 2>/dev/null || true
    if [ "$MADE_GROUP" = 1 ]; then
        delgroup --system --quiet ironpop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs a package and creates users)"

step "a clean start"
if dpkg-query -W -f='${Status}' ironpop 2>/dev/null | grep -q installed; then
    dpkg --purge ironpop >/dev/null
fi
# A user left by an earlier run of this test (the package keeps it).
if getent passwd ironpop >/dev/null; then
    [ "$(getent passwd ironpop | cut -d: -f6)" = /var/lib/ironpop ] \
        || fail "a user 'ironpop' exists that this package did not create"
    deluser --system --quiet ironpop
fi
if getent passwd "$TEST_USER" >/dev/null; then
    userdel -r "$TEST_USER" >/dev/null 2>&1 || true
fi

if [ -z "$DEB" ]; then
    step "cargo deb"
    DEB="$(cargo deb --locked 2>"$WORK/cargo-deb.log" | tail -n 1)" \
        || { cat "$WORK/cargo-deb.log" >&2; fail "cargo deb"; }
fi
[ -f "$DEB" ] || fail "no package at '$DEB'"
echo "$DEB"
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'
dpkg-deb --contents "$DEB"

step "lintian"
# Errors and warnings fail the test; info is shown for the reader.
lintian --fail-on error,warning --display-level '>=info' "$DEB" \
    || fail "lintian reports errors or warnings"

step "dpkg -i"
dpkg -i "$DEB"
dpkg-query -L ironpop | sort > "$WORK/files"
conffiles="$(dpkg-query -W -f='${Conffiles}' ironpop)"
for f in /etc/ironpop/ironpop.conf /etc/pam.d/ironpop; do
    grep -q "^ *$f " <<<"$conffiles" || fail "$f is not a conffile"
done
# The packaged daemon is built with PAM, and the package depends on libpam.
ldd /usr/sbin/ironpop | grep -q 'libpam\.so' || fail "/usr/sbin/ironpop is not built with PAM"
dpkg-query -W -f='${Depends}' ironpop | grep -q 'libpam0g' \
    || fail "the package does not depend on libpam0g: $(dpkg-query -W -f='${Depends}' ironpop)"

step "what postinst did"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd ironpop) \
    || fail "postinst did not create the user ironpop"
[ "$uid" -lt 1000 ] || fail "ironpop is not a system user (uid $uid)"
[ "$gid" = "$(getent group mail | cut -d: -f3)" ] || fail "ironpop's group is not mail"
[ "$home" = /var/lib/ironpop ] || fail "ironpop's home is $home"
case "$shell" in */nologin|*/false) ;; *) fail "ironpop has a login shell ($shell)" ;; esac
id -nG ironpop | grep -qw ssl-cert || fail "ironpop is not in group ssl-cert"
[ "$(stat -c '%a %U %G' /var/lib/ironpop)" = "700 ironpop mail" ] \
    || fail "/var/lib/ironpop is $(stat -c '%a %U %G' /var/lib/ironpop)"
getent group ironpop >/dev/null || fail "postinst did not create the group ironpop"
for f in ironpop-stats.service ironpop-stats.timer; do
    [ -f "/usr/share/doc/ironpop/examples/$f" ] || fail "example $f is not installed"
done

step "the installed configuration"
/usr/sbin/ironpop -t > "$WORK/effective.conf"
grep -qx 'plaintext_auth = tls-only' "$WORK/effective.conf" || fail "plaintext is not off"
grep -qx 'listen_tls = 0.0.0.0:995 \[::\]:995' "$WORK/effective.conf" || fail "no POP3S listeners"
man -l /usr/share/man/man8/ironpop.8.gz >/dev/null 2>&1 \
    || [ ! -x /usr/bin/man ] || fail "man -l ironpop.8 fails"
# The cluster example (ironpop(8), SCALING) is shipped and HAProxy accepts it.
example=/usr/share/doc/ironpop/examples/haproxy.cfg
[ -f "$example" ] || fail "no $example"
if command -v haproxy >/dev/null; then
    haproxy -c -f "$example" >/dev/null || fail "haproxy -c -f $example"
fi

step "systemd units"
units="$(grep -E '^/(usr/)?lib/systemd/system/' "$WORK/files" | grep -E '\.(service|socket)$' || true)"
if [ -z "$units" ]; then
    echo "MISSING: the package has no systemd units (packaging/systemd/ is not in this tree)"
elif command -v systemd-analyze >/dev/null; then
    # shellcheck disable=SC2086
    SYSTEMD_LOG_LEVEL=notice systemd-analyze verify $units
    echo "verified: $units"
    grep -qx 'RuntimeDirectory=ironpop' /usr/lib/systemd/system/ironpop.service \
        || fail "ironpop.service does not create /run/ironpop for the control socket"
fi

if [ "$LOGIN" = 1 ]; then
    step "a system user with mail"
    useradd --create-home --shell /bin/bash "$TEST_USER"
    echo "$TEST_USER:$TEST_PASS" | chpasswd
    spool="/var/mail/$TEST_USER"
    {
        printf 'From alice@example.org Sat Nov 28 10:00:00 2026\n'
        printf 'From: alice@example.org\nTo: %s\nSubject: first\n\n' "$TEST_USER"
        printf 'Hello over POP3S.\n\n'
        printf 'From bob@example.org Sat Nov 28 10:01:00 2026\n'
        printf 'From: bob@example.org\nTo: %s\nSubject: second\n\n' "$TEST_USER"
        printf 'Hello over STLS.\n\n'
    } > "$spool"
    # Debian's delivery agents create spools USER:mail 0660.
    chown "$TEST_USER:mail" "$spool"
    chmod 0660 "$spool"
    cp "$spool" "$WORK/spool.before"

    step "start /usr/sbin/ironpop -F, as ironpop.service does"
    for port in 110 995; do
        if ss -Hltn "sport = :$port" | grep -q .; then
            fail "port $port is already in use on this machine"
        fi
    done
    /usr/sbin/ironpop -F 2>"$WORK/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 1 100); do
        [ "$(grep -c 'listening on' "$WORK/daemon.log" || true)" -ge 4 ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log"; fail "ironpop exited"; }
        sleep 0.2
    done
    cat "$WORK/daemon.log"
    grep -q 'listening on 0.0.0.0:995 (pop3s)' "$WORK/daemon.log" || fail "no POP3S listener"
    grep -q 'listening on 0.0.0.0:110 (pop3)' "$WORK/daemon.log" || fail "no POP3 listener"
    grep -q 'privileges dropped to user=ironpop' "$WORK/daemon.log" \
        || fail "the daemon did not drop its privileges to ironpop"
    [ "$(awk '/^Uid:/ { print $2 }' "/proc/$DAEMON_PID/status")" = "$uid" ] \
        || fail "the daemon does not run as ironpop (uid $uid)"

    # Verify the server for real: the snakeoil certificate is the trust
    # anchor and its own name is the host name curl checks.
    cert=/etc/ssl/certs/ssl-cert-snakeoil.pem
    name="$(openssl x509 -in "$cert" -noout -subject -nameopt multiline \
        | sed -n 's/^ *commonName *= *//p')"
    [ -n "$name" ] || fail "cannot read the snakeoil certificate's name"
    curl_tls=(curl --silent --show-error --max-time 20 --ssl-reqd --cacert "$cert"
        --resolve "$name:995:127.0.0.1" --resolve "$name:110:127.0.0.1"
        --user "$TEST_USER:$TEST_PASS")

    step "SIGHUP re-reads the snakeoil key after the privilege drop (group ssl-cert)"
    kill -HUP "$DAEMON_PID"
    for _ in $(seq 1 50); do
        grep -q 'received SIGHUP: \(reloaded TLS\|keeping the previous TLS\)' "$WORK/daemon.log" && break
        sleep 0.2
    done
    grep -q 'received SIGHUP: reloaded TLS certificate' "$WORK/daemon.log" \
        || fail "SIGHUP did not reload the TLS key: $(grep SIGHUP "$WORK/daemon.log")"

    step "POP3S: list and read message 1"
    "${curl_tls[@]}" "pop3s://$name:995/" > "$WORK/list"
    [ "$(wc -l < "$WORK/list")" -eq 2 ] || fail "LIST over POP3S: $(cat "$WORK/list")"
    "${curl_tls[@]}" "pop3s://$name:995/1" > "$WORK/msg1"
    grep -q '^Subject: first' "$WORK/msg1" && grep -q 'Hello over POP3S.' "$WORK/msg1" \
        || fail "RETR 1 over POP3S: $(cat "$WORK/msg1")"

    step "STLS on port 110: read message 2"
    "${curl_tls[@]}" "pop3://$name:110/2" > "$WORK/msg2"
    grep -q 'Hello over STLS.' "$WORK/msg2" || fail "RETR 2 after STLS: $(cat "$WORK/msg2")"

    step "ironpop(8)'s EXAMPLES work as written against the installed package"
    # Every command of the manual's EXAMPLES blocks that sets cert/name or
    # runs curl or openssl s_client, un-roffed; only the user name gets the
    # test account's password, as curl would have asked for it.
    zcat /usr/share/man/man8/ironpop.8.gz \
        | sed -n '/^\.SH EXAMPLES/,/^\.SH /p' \
        | sed -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" \
        | grep -E '^(cert=|name=|curl |openssl s_client )' > "$WORK/examples"
    cat "$WORK/examples"
    [ "$(grep -c '^curl ' "$WORK/examples")" -ge 2 ] || fail "no curl examples in ironpop(8)"
    [ "$(grep -c '^openssl s_client ' "$WORK/examples")" -ge 2 ] \
        || fail "no openssl examples in ironpop(8)"
    (
        cd "$WORK"
        while IFS= read -r cmd; do
            case "$cmd" in
                cert=*|name=*) eval "$cmd"; continue ;;
                curl\ *)
                    run="${cmd/alice@/$TEST_USER:$TEST_PASS@}"
                    echo "\$ $cmd"
                    eval "$run --silent --show-error --max-time 20" > example.out \
                        || fail "ironpop(8) example failed: $cmd"
                    [ -s example.out ] || fail "ironpop(8) example printed nothing: $cmd" ;;
                openssl\ *)
                    echo "\$ $cmd"
                    # -ign_eof: s_client would otherwise hang up as soon as
                    # its piped input ends, often before the server's reply
                    # arrived; with it, it reads until the server closes
                    # after QUIT (a person typing at it needs no such flag).
                    printf 'CAPA\r\nQUIT\r\n' | eval "timeout 20 $cmd -ign_eof" > example.out 2>&1 \
                        || { cat example.out; fail "ironpop(8) example failed: $cmd"; }
                    grep -q 'Verify return code: 0 (ok)' example.out \
                        || { cat example.out; fail "certificate not verified: $cmd"; }
                    grep -q '^+OK' example.out || { cat example.out; fail "no POP3 reply: $cmd"; } ;;
            esac
        done < "$WORK/examples"
    ) || exit 1

    step "no password without TLS"
    if curl --silent --max-time 20 --user "$TEST_USER:$TEST_PASS" \
        "pop3://127.0.0.1:110/1" > "$WORK/plain" 2>&1; then
        fail "a plaintext login succeeded with the installed config"
    fi

    step "a failed login is logged for fail2ban"
    curl --silent --max-time 20 --ssl-reqd --cacert "$cert" --resolve "$name:995:127.0.0.1" \
        --user "$TEST_USER:wrong-password" "pop3s://$name:995/" >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
        grep -q "failed: user=$TEST_USER" "$WORK/daemon.log" && break
        sleep 0.2
    done
    grep "failed: user=$TEST_USER" "$WORK/daemon.log" || fail "no failed-login line"
    if command -v fail2ban-regex >/dev/null; then
        fail2ban-regex -o ip "$WORK/daemon.log" /etc/fail2ban/filter.d/ironpop.conf \
            > "$WORK/f2b" || fail "fail2ban-regex"
        grep -qx '127.0.0.1' "$WORK/f2b" || fail "the installed fail2ban filter missed: $(cat "$WORK/f2b")"
    fi

    step "ironpop --who, --stats and --kick on the control socket"
    [ "$(stat -c '%a %U %G' /run/ironpop/control)" = "660 root ironpop" ] \
        || fail "/run/ironpop/control is $(stat -c '%a %U %G' /run/ironpop/control)"
    /usr/sbin/ironpop --who > "$WORK/who" || fail "ironpop --who"
    head -n 1 "$WORK/who" | grep -q '^USER  *CLIENT' || fail "--who: $(cat "$WORK/who")"
    /usr/sbin/ironpop --stats > "$WORK/stats" || fail "ironpop --stats"
    cat "$WORK/stats"
    grep -Eq '^logins_failed_(user|plain) +[1-9][0-9]*$' "$WORK/stats" || fail "--stats: no failed login counted"
    /usr/sbin/ironpop --stats --openmetrics | tail -n 1 | grep -qx '# EOF' \
        || fail "--stats --openmetrics does not end with # EOF"
    /usr/sbin/ironpop --stats --prometheus > "$WORK/prom" || fail "ironpop --stats --prometheus"
    grep -qx '# TYPE ironpop_logins_failed_total counter' "$WORK/prom" \
        || fail "--stats --prometheus: no typed counter for node_exporter's textfile collector"
    if /usr/sbin/ironpop --kick "$TEST_USER" > "$WORK/kick"; then
        fail "--kick matched a session nobody has open: $(cat "$WORK/kick")"
    fi
    grep -qx "ended 0 sessions of user $TEST_USER" "$WORK/kick" || fail "--kick: $(cat "$WORK/kick")"

    step "stop"
    kill -TERM "$DAEMON_PID"
    status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=""
    [ "$status" -eq 0 ] || fail "ironpop exited with $status after SIGTERM"
    grep -q 'stopped' "$WORK/daemon.log" || fail "no 'stopped' line"
    cmp -s "$spool" "$WORK/spool.before" || fail "the spool changed without DELE"
    [ "$(stat -c '%U %G %a' "$spool")" = "$TEST_USER mail 660" ] \
        || fail "the spool's owner or mode changed: $(stat -c '%U %G %a' "$spool")"
else
    echo "SKIPPED (--no-login): starting the daemon and the POP3S/STLS logins"
fi

step "dpkg -r keeps the configuration, dpkg --purge removes it"
dpkg -r ironpop
[ -f /etc/ironpop/ironpop.conf ] || fail "dpkg -r removed the conffile"
[ ! -e /usr/sbin/ironpop ] || fail "dpkg -r left /usr/sbin/ironpop"
dpkg --purge ironpop
left=""
while read -r f; do
    if [ -d "$f" ] && [ ! -L "$f" ]; then
        continue # shared directories (/etc, /usr/sbin, ...) stay
    fi
    if [ -e "$f" ] || [ -L "$f" ]; then
        left="$left $f"
    fi
done < "$WORK/files"
for d in /etc/ironpop /var/lib/ironpop /usr/share/doc/ironpop; do
    [ ! -e "$d" ] || left="$left $d"
done
# Enablement symlinks made by postinst.
for l in /etc/systemd/system/*/ironpop*; do
    [ ! -e "$l" ] && [ ! -L "$l" ] || left="$left $l"
done
[ -z "$left" ] || fail "left after purge:$left"
getent passwd ironpop >/dev/null \
    || fail "purge removed the user ironpop (documented: it is kept)"
echo "purged; the system user ironpop is kept, as ironpop(8) documents"

step "ok"
