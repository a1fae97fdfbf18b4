#!/usr/bin/env bash
# Point-in-time-recovery drill on a private PostgreSQL cluster.
#
# The script creates a cluster of its own in a temporary folder, on a free
# port of 127.0.0.1, with WAL archiving on. It takes a base backup, writes
# rows, notes the time T, writes more rows and deletes some of the first
# ones, then restores the base backup into a new folder with
# recovery_target_time = T. The restored cluster must hold every row
# written before T and none of the changes made after it.
#
# It never touches another cluster. It exits non-zero when any step fails
# and removes everything it created on exit.
#
# Settings (environment variables, all optional):
#   PG_BINDIR           folder with initdb, pg_ctl, pg_basebackup, psql and
#                       pg_verifybackup (default: pg_config --bindir, then
#                       the newest /usr/lib/postgresql/*/bin)
#   PITR_PORT           port of the source cluster (default: a free port)
#   PITR_RESTORE_PORT   port of the restored cluster (default: a free port)
#   PITR_KEEP=1         keep the temporary folder for inspection
#
# Run as root, it runs PostgreSQL as the `postgres` user through runuser,
# because PostgreSQL refuses to run as root. Run as another user, it runs
# PostgreSQL as that user.
set -euo pipefail

ROWS_BEFORE=100
ROWS_AFTER=50
DELETED_AFTER=10

log() {
    printf 'pitr-drill: [%3ss] %s\n' "$SECONDS" "$*"
}

fail() {
    printf 'pitr-drill: FAILED: %s\n' "$*" >&2
    exit 1
}

find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        printf '%s\n' "$PG_BINDIR"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        local dir
        dir="$(pg_config --bindir)"
        if [ -x "$dir/initdb" ]; then
            printf '%s\n' "$dir"
            return
        fi
    fi
    local newest=""
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && newest="$dir"
    done
    printf '%s\n' "$newest"
}

BINDIR="$(find_bindir)"
for tool in initdb pg_ctl pg_basebackup pg_verifybackup psql; do
    [ -x "$BINDIR/$tool" ] || fail "$tool not found in '${BINDIR}'; set PG_BINDIR to the PostgreSQL bin folder"
done

RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
    command -v runuser >/dev/null 2>&1 || fail "runuser is required to run PostgreSQL as the postgres user"
    id -u postgres >/dev/null 2>&1 || fail "the postgres user does not exist"
    RUN_AS=(runuser -u postgres --)
fi

# Runs a PostgreSQL program as the cluster's owner.
pg() {
    local program="$1"
    shift
    "${RUN_AS[@]}" "$BINDIR/$program" "$@"
}

port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if port_is_free "$port"; then
            printf '%s\n' "$port"
            return
        fi
    done
    fail "no free port found on 127.0.0.1"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pitr-drill.XXXXXX")"
if [ "${#RUN_AS[@]}" -gt 0 ]; then
    chown postgres: "$WORK"
fi
# The PostgreSQL programs run as another user, which may not be allowed
# into the caller's working folder.
cd "$WORK"
SOURCE="$WORK/source"
BACKUP="$WORK/base-backup"
ARCHIVE="$WORK/wal-archive"
RESTORE="$WORK/restored"
pg_mkdir() {
    "${RUN_AS[@]}" mkdir -m 700 "$1"
}

cleanup() {
    local status=$?
    for data in "$RESTORE" "$SOURCE"; do
        if [ -f "$data/postmaster.pid" ]; then
            pg pg_ctl -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
    if [ "${PITR_KEEP:-0}" = "1" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    if [ "$status" -eq 0 ]; then
        log "PASSED"
    fi
}
trap cleanup EXIT

SOURCE_PORT="${PITR_PORT:-$(free_port)}"
RESTORE_PORT="${PITR_RESTORE_PORT:-$(free_port)}"
[ "$SOURCE_PORT" != "$RESTORE_PORT" ] || fail "PITR_PORT and PITR_RESTORE_PORT must differ"

# Runs one SQL statement on the cluster listening on PORT and prints the
# result unaligned, without headers.
sql() {
    local port="$1"
    shift
    pg psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$port" -U postgres -d postgres -c "$*"
}

log "PostgreSQL programs: $BINDIR ($("$BINDIR/postgres" --version))"
log "working folder: $WORK"

# 1. A source cluster with WAL archiving on. The drill's folders are thrown
# away afterwards, so nothing is synced to disk (--no-sync, fsync = off);
# production keeps fsync on and pg_basebackup's default sync.
pg initdb -D "$SOURCE" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions >"$WORK/initdb.log" 2>&1 \
    || fail "initdb failed: $(cat "$WORK/initdb.log")"
pg_mkdir "$ARCHIVE"
cat >>"$SOURCE/postgresql.conf" <<EOF

# pitr-drill
listen_addresses = '127.0.0.1'
port = $SOURCE_PORT
unix_socket_directories = '$WORK'
fsync = off
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $ARCHIVE/%f && cp %p $ARCHIVE/%f'
archive_timeout = 60
EOF
pg pg_ctl -D "$SOURCE" -l "$WORK/source.log" -w -t 60 start >/dev/null \
    || fail "the source cluster did not start: $(tail -20 "$WORK/source.log")"
log "1. source cluster started on 127.0.0.1:$SOURCE_PORT, archiving WAL to $ARCHIVE"

sql "$SOURCE_PORT" "CREATE TABLE drill (id integer PRIMARY KEY, phase text NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null

# 2. A base backup, checked against its manifest.
pg pg_basebackup -h "$WORK" -p "$SOURCE_PORT" -U postgres -D "$BACKUP" \
    --checkpoint=fast --wal-method=stream --manifest-checksums=SHA256 --no-sync >"$WORK/basebackup.log" 2>&1 \
    || fail "pg_basebackup failed: $(cat "$WORK/basebackup.log")"
pg pg_verifybackup "$BACKUP" >"$WORK/verifybackup.log" 2>&1 \
    || fail "pg_verifybackup failed: $(cat "$WORK/verifybackup.log")"
log "2. base backup taken with pg_basebackup and checked with pg_verifybackup: $(cat "$WORK/verifybackup.log")"

# 3. Rows written before T.
sql "$SOURCE_PORT" "INSERT INTO drill (id, phase) SELECT n, 'before' FROM generate_series(1, $ROWS_BEFORE) AS n" >/dev/null

# 4. T, read from the server's clock once those rows are committed, so
# every commit before it has an earlier timestamp.
TARGET="$(sql "$SOURCE_PORT" "SELECT clock_timestamp()")"
log "3-4. wrote $ROWS_BEFORE rows, then noted T = $TARGET"
sleep 1

# 5. Changes after T: new rows, and a mistake that the restore must undo.
sql "$SOURCE_PORT" "INSERT INTO drill (id, phase) SELECT n, 'after' FROM generate_series($ROWS_BEFORE + 1, $ROWS_BEFORE + $ROWS_AFTER) AS n" >/dev/null
sql "$SOURCE_PORT" "DELETE FROM drill WHERE phase = 'before' AND id <= $DELETED_AFTER" >/dev/null
log "5. after T: wrote $ROWS_AFTER rows and deleted $DELETED_AFTER of the earlier ones"

# 6. Recovery must read a commit later than T to know where to stop, so the
# segment holding these changes is closed and must reach the archive.
LAST_SEGMENT="$(sql "$SOURCE_PORT" "SELECT pg_walfile_name(pg_switch_wal())")"
for _ in $(seq 1 300); do
    [ -f "$ARCHIVE/$LAST_SEGMENT" ] && break
    sleep 0.1
done
[ -f "$ARCHIVE/$LAST_SEGMENT" ] || fail "WAL segment $LAST_SEGMENT did not reach the archive in 30 s: $(sql "$SOURCE_PORT" "SELECT * FROM pg_stat_archiver")"
log "6. WAL segment $LAST_SEGMENT archived ($(find "$ARCHIVE" -type f | wc -l) files in the archive)"

# 7. The source is lost.
pg pg_ctl -D "$SOURCE" -m fast -w stop >/dev/null || fail "the source cluster did not stop"
log "7. source cluster stopped"

# 8. Restore the base backup into a new folder and recover to T.
"${RUN_AS[@]}" cp -a "$BACKUP" "$RESTORE"
chmod 700 "$RESTORE"
cat >>"$RESTORE/postgresql.conf" <<EOF

# pitr-drill: recovery to T
port = $RESTORE_PORT
archive_mode = off
restore_command = 'cp $ARCHIVE/%f %p'
recovery_target_time = '$TARGET'
recovery_target_action = 'promote'
EOF
"${RUN_AS[@]}" touch "$RESTORE/recovery.signal"
pg pg_ctl -D "$RESTORE" -l "$WORK/restored.log" -w -t 120 start >/dev/null \
    || fail "the restored cluster did not start: $(tail -20 "$WORK/restored.log")"

# pg_ctl returns once connections are accepted, which may be before
# recovery reaches T and promotes.
for _ in $(seq 1 600); do
    [ "$(sql "$RESTORE_PORT" "SELECT pg_is_in_recovery()")" = "f" ] && break
    sleep 0.1
done
[ "$(sql "$RESTORE_PORT" "SELECT pg_is_in_recovery()")" = "f" ] \
    || fail "the restored cluster did not finish recovery in 60 s: $(tail -20 "$WORK/restored.log")"
STOP_LINE="$(grep -m1 'recovery stopping' "$WORK/restored.log" || true)"
[ -n "$STOP_LINE" ] || fail "the restored cluster's log has no 'recovery stopping' line: $(tail -20 "$WORK/restored.log")"
log "8. restored into $RESTORE on 127.0.0.1:$RESTORE_PORT and promoted; PostgreSQL logged: ${STOP_LINE#*LOG:  }"

# 9. Checks, on the restored cluster only.
DATA_DIRECTORY="$(sql "$RESTORE_PORT" "SHOW data_directory")"
[ "$DATA_DIRECTORY" = "$RESTORE" ] || fail "port $RESTORE_PORT serves $DATA_DIRECTORY, not $RESTORE"
BEFORE="$(sql "$RESTORE_PORT" "SELECT count(*) FROM drill WHERE phase = 'before'")"
AFTER="$(sql "$RESTORE_PORT" "SELECT count(*) FROM drill WHERE phase = 'after'")"
LATEST="$(sql "$RESTORE_PORT" "SELECT coalesce(max(written_at) <= '$TARGET'::timestamptz, true) FROM drill")"
log "9. restored rows: $BEFORE of $ROWS_BEFORE written before T, $AFTER of $ROWS_AFTER written after T"
[ "$BEFORE" = "$ROWS_BEFORE" ] || fail "expected $ROWS_BEFORE rows written before T (the deletion after T undone), found $BEFORE"
[ "$AFTER" = "0" ] || fail "expected no rows written after T, found $AFTER"
[ "$LATEST" = "t" ] || fail "the restored table holds a row written after T"
log "restored to T: every row written before T is present, no change made after T is"
