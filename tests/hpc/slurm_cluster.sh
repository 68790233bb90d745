#!/usr/bin/env bash
# A real single-node SLURM cluster for climai's tests, shaped like Leonardo (Cineca).
#
#   tests/hpc/slurm_cluster.sh install   # Debian packages (idempotent; fast when present)
#   tests/hpc/slurm_cluster.sh start     # munged, MariaDB, slurmdbd, slurmctld, slurmd
#   tests/hpc/slurm_cluster.sh stop      # stop every daemon by its PID file
#   tests/hpc/slurm_cluster.sh status    # sinfo / squeue / associations
#   tests/hpc/slurm_cluster.sh env       # `eval "$(tests/hpc/slurm_cluster.sh env)"`
#
# Works as root on Debian 12 without systemd or cgroups. Everything the cluster writes (configs,
# PID files, logs, spool, database, its generated database password) lives under one state folder:
#   CLIMAI_SLURM_STATE (default /tmp/climai-slurm-<user>)
# which must be a real folder (no link) owned by the user running this script and writable by no
# one else: root acts on the PID files and configs found there, so a folder another user made
# first is refused, never used.
# The exceptions are munged's socket, which stays at its default /run/munge/munge.socket.2, and a
# link /etc/slurm/slurm.conf -> $STATE/slurm.conf (made only where no such file exists), so that
# every SLURM tool finds them without extra configuration (also `srun` inside a Snakemake job,
# which runs without $SLURM_CONF).
#
# Partitions (all on the one node, which declares 112 CPUs, 512 GB and 4 fake GPUs):
#   lrd_all_serial (default) and dcgp_usr_prod: CPU only; a GPU request is rejected at submission
#   boost_usr_prod: GPU; QOS normal (default) or boost_qos_dbg
# Account: climai_test (user root). Unknown accounts are rejected at submission.
set -euo pipefail

STATE="${CLIMAI_SLURM_STATE:-/tmp/climai-slurm-$(id -un)}"
CLUSTER="climai"
ACCOUNT="climai_test"
NODE="$(hostname -s)"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
READY_TIMEOUT="${CLIMAI_SLURM_READY_TIMEOUT:-60}"   # seconds per daemon / readiness check

# Database credentials for slurmdbd; the database only listens on 127.0.0.1 and lives in $STATE.
# The password is generated for each cluster (state folder) and kept in $STATE/db_password (0600).
DB_USER="slurm"
DB_PASS=""

LOG="$STATE/log"
RUN="$STATE/run"

log() { printf '[slurm_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (daemons run as root, munged as user munge)"
}

# Print the tail of a log file, for loud failures.
show_log() {
    local f="$1"
    if [[ -f "$f" ]]; then
        log "---- last lines of $f ----"
        tail -n 40 "$f" >&2 || true
        log "---- end of $f ----"
    else
        log "(no log file $f)"
    fi
}

# Wait until the command "$@" succeeds, at most READY_TIMEOUT seconds.
wait_for() {
    local what="$1"; shift
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${READY_TIMEOUT}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# The state folder, made (0755: munged, running as user munge, must traverse it) or checked: a
# real folder, owned by us, writable by no one else. Anything else is refused before it is used.
secure_state() {
    if [[ ! -e "$STATE" && ! -L "$STATE" ]]; then
        mkdir -p "$(dirname "$STATE")"
        mkdir -m 755 "$STATE" || die "cannot create the state folder $STATE"
    fi
    [[ -d "$STATE" && ! -L "$STATE" ]] || die "state folder $STATE is not a folder (or is a link)"
    local owner mode
    owner="$(stat -c %u "$STATE")"
    mode="$(stat -c %a "$STATE")"
    [[ "$owner" == "$(id -u)" ]] \
        || die "state folder $STATE belongs to uid $owner, not to you ($(id -u)): refusing to use it; set CLIMAI_SLURM_STATE"
    (( (8#$mode & 8#022) == 0 )) \
        || die "state folder $STATE is writable by group or others (mode $mode): refusing to use it"
}

# The database password of this cluster: made once (random) and kept in $STATE, readable by us only.
db_password() {
    local f="$STATE/db_password"
    if [[ ! -s "$f" ]]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$f")
    fi
    chmod 600 "$f"
    cat "$f"
}

# A TCP port on 127.0.0.1 that nothing listens on, preferring $1.
free_port() {
    local port="$1"
    while ss -Htln "sport = :$port" | grep -q .; do
        port=$((port + 1))
    done
    echo "$port"
}

# PID stored in a PID file, if that process is alive.
alive_pid() {
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# ----------------------------------------------------------------------------------- install
packages_installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
    done
}

apt_install() {
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}" >>"$apt_log" 2>&1
}

cmd_install() {
    need_root
    if packages_installed; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    command -v apt-get >/dev/null || die "apt-get not found: cannot install ${PACKAGES[*]}"
    local t0=$SECONDS
    # A policy-rc.d that exits 101 forbids package scripts to start services (no systemd here,
    # and we start the daemons ourselves). Only remove it afterwards if we created it.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi

    export DEBIAN_FRONTEND=noninteractive
    apt_log="${TMPDIR:-/tmp}/climai-slurm-apt.log"
    : >"$apt_log"
    # apt-get update only when the package lists don't know the packages yet.
    if ! apt-cache show "${PACKAGES[@]}" >/dev/null 2>&1; then
        log "apt-get update"
        apt-get update -q >"$apt_log" 2>&1 || { show_log "$apt_log"; die "apt-get update failed"; }
    fi
    log "apt-get install ${PACKAGES[*]}"
    if ! apt_install; then
        # Stale package lists (files gone from the mirror): refresh once and retry.
        log "apt-get install failed; apt-get update and retry"
        apt-get update -q >>"$apt_log" 2>&1 || true
        apt_install || { show_log "$apt_log"; die "apt-get install failed"; }
    fi
    log "installed in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------- configs
write_configs() {
    mkdir -p "$STATE"/{log,run,ctld,spool,dev,munge}
    # Fake GPUs: slurmd wants device files for gres (a bare Count= is dropped and the node
    # drains; regular files are rejected as devices), so each "GPU" is a symlink to /dev/null.
    local i
    for i in 0 1 2 3; do
        ln -sfn /dev/null "$STATE/dev/nvidia$i"
    done

    cat >"$STATE/slurm.conf" <<EOF
# Generated by tests/hpc/slurm_cluster.sh -- a one-node cluster shaped like Leonardo.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No mail on this machine.
MailProg=/bin/true

StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
# Continue after the highest job ID already in the accounting database, so that sacct -j ID
# never mixes this run's job with an older one.
FirstJobId=${FIRST_JOB_ID:-1}
SlurmdDebug=info

# No systemd and no cgroups here: track processes via /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# Sample every task's memory each second: with the default (30 s) a step that ends sooner is
# never sampled and sacct shows an empty MaxRSS (every toy job here runs 5-20 s).
JobAcctGatherFrequency=task=1

# Allocate CPUs and memory individually so several jobs share the node.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# The node declares more CPUs/memory than this machine has; without config_overrides slurmd
# would report the real hardware and the node would drain. Jobs then run oversubscribed.
SlurmdParameters=config_overrides
ReturnToService=2
# Keep finished jobs visible to squeue/scontrol for 5 minutes.
MinJobAge=300
# Reject (rather than hold pending) jobs that exceed partition or QOS limits.
EnforcePartLimits=ALL

# Accounting through slurmdbd: sacct and sacctmgr are real; unknown accounts and QOS-limit
# violations are refused at submission.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
# Store each job's --comment (the Snakemake plugin writes rule_<name> there): without this flag
# sacct's Comment column stays empty.
AccountingStoreFlags=job_comment

GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=112 RealMemory=512000 Gres=gpu:4 State=UNKNOWN

# Leonardo's partition names. The CPU partitions carry the QOS cpu_nogpu (MaxTRESPerJob
# gres/gpu=0, DenyOnLimit) so that a GPU request there fails at submission, as on site.
# DefaultTime matters: without it a job without --time gets its QOS's MaxWall (normal: 1 day),
# which exceeds lrd_all_serial's 4 h and is refused ("Requested partition configuration not
# available now"). DefMemPerCPU: a job without --mem would otherwise get the whole node's memory
# and run alone.
DefMemPerCPU=4000
PartitionName=lrd_all_serial Nodes=$NODE Default=YES DefaultTime=01:00:00 MaxTime=04:00:00 State=UP $(part_qos)
PartitionName=dcgp_usr_prod Nodes=$NODE DefaultTime=01:00:00 MaxTime=1-00:00:00 State=UP $(part_qos)
PartitionName=boost_usr_prod Nodes=$NODE DefaultTime=01:00:00 MaxTime=1-00:00:00 State=UP
EOF

    cat >"$STATE/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=$STATE/dev/nvidia[0-3]
EOF

    # Nothing is constrained through cgroups (task/none, proctrack/linuxproc); this file only
    # keeps slurmd from looking for a system-wide one.
    cat >"$STATE/cgroup.conf" <<EOF
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

    # slurmdbd.conf must be owned by SlurmUser and not readable by others (it has the DB password).
    cat >"$STATE/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/slurmdbd.conf"

    # The ports of this run, for people reading logs.
    cat >"$STATE/ports" <<EOF
DB_PORT=$DB_PORT
DBD_PORT=$DBD_PORT
CTLD_PORT=$CTLD_PORT
SLURMD_PORT=$SLURMD_PORT
EOF
}

# The partition QOS must exist in the database before slurmctld reads it, and that QOS can only
# name gres/gpu once slurmctld has registered that TRES. So the first start runs without it and
# adds it with `scontrol reconfigure` (see add_partition_qos).
part_qos() {
    if [[ -e "$STATE/mysql/.climai_qos_ready" ]]; then echo "QOS=cpu_nogpu"; fi
}

# SLURM clients inside jobs may not see $SLURM_CONF: the Snakemake jobstep plugin strips every
# SLURM_* variable except the job's identity before its nested `srun`. On a site, clients then
# read /etc/slurm/slurm.conf, so link our config there (only when nothing else is there; the
# link is removed on stop only if it still points at our config).
SYSTEM_CONF=/etc/slurm/slurm.conf
link_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$STATE/slurm.conf" ]]; then
        return 0
    fi
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        log "WARNING: $SYSTEM_CONF exists and is not ours: srun inside jobs will use it"
        return 0
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$STATE/slurm.conf" "$SYSTEM_CONF"
}

unlink_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$STATE/slurm.conf" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

# ------------------------------------------------------------------------------------ munge
start_munge() {
    # Reuse a munged that already answers (e.g. one started by the system).
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already answering"
        return 0
    fi
    [[ -s /etc/munge/munge.key ]] || {
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    # munged refuses to run as root and needs its socket folder owned by munge.
    install -d -o munge -g munge -m 755 /run/munge
    chown munge:munge "$STATE/munge"
    chmod 700 "$STATE/munge"
    runuser -u munge -- /usr/sbin/munged \
        --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed" \
        || { show_log "$STATE/munge/munged.log"; die "munged did not start"; }
    wait_for "munged" bash -c 'munge -n </dev/null | unmunge' \
        || { show_log "$STATE/munge/munged.log"; die "munged does not answer"; }
    log "munged up"
}

# ---------------------------------------------------------------------------------- mariadb
start_mariadb() {
    local datadir="$STATE/mysql"
    if [[ ! -d "$datadir/mysql" ]]; then
        log "mariadb-install-db into $datadir"
        mkdir -p "$datadir"
        mariadb-install-db --no-defaults --user=root --datadir="$datadir" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install.log" 2>&1 \
            || { show_log "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
    fi
    # Private server: no defaults files, TCP only on 127.0.0.1, socket and PID file in $STATE.
    setsid mariadbd --no-defaults --user=root --datadir="$datadir" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$RUN/mariadb.sock" \
        --pid-file="$RUN/mariadb.pid" --log-error="$LOG/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
        </dev/null >>"$LOG/mariadb.log" 2>&1 &
    wait_for "mariadb" mariadb --no-defaults --socket="$RUN/mariadb.sock" -uroot -e 'SELECT 1' \
        || { show_log "$LOG/mariadb.log"; die "mariadb did not come up"; }
    mariadb --no-defaults --socket="$RUN/mariadb.sock" -uroot <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    log "mariadb up on 127.0.0.1:$DB_PORT"
}

# -------------------------------------------------------------------------------- slurm daemons
# Start a SLURM daemon (it forks into the background itself and writes its PID file).
start_daemon() {
    local name="$1"; shift
    "$@" >>"$LOG/$name.stdout" 2>&1 || { show_log "$LOG/$name.log"; show_log "$LOG/$name.stdout"; \
        die "$name failed to start"; }
    wait_for "$name PID file" alive_pid "$RUN/$name.pid" \
        || { show_log "$LOG/$name.log"; show_log "$LOG/$name.stdout"; die "$name is not running"; }
}

start_slurmdbd() {
    start_daemon slurmdbd slurmdbd
    wait_for "slurmdbd" sacctmgr -n list cluster \
        || { show_log "$LOG/slurmdbd.log"; die "slurmdbd does not answer"; }
    log "slurmdbd up on 127.0.0.1:$DBD_PORT"
}

sacctmgr_q() { sacctmgr -i -Q "$@" >/dev/null 2>&1 || true; }   # idempotent adds

# Highest job ID in the accounting database + 1 (1 for a fresh database).
next_job_id() {
    local max
    max="$(sacct -a -X -n -P -o JobIDRaw -S 2000-01-01 -E now 2>/dev/null \
        | tr -dc '0-9\n' | sort -n | tail -n 1)"
    echo $(( ${max:-0} + 1 ))
}

add_cluster_account() {
    # The cluster must exist before slurmctld registers; account and user can come now too.
    sacctmgr_q add cluster "$CLUSTER"
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
        || die "sacctmgr could not add cluster $CLUSTER"
}

start_slurmctld() {
    # -c: forget jobs of a previous run. Recovered jobs whose slurmd went away (crash, stop with
    # jobs running) stay "running" and keep the node out of `idle` for ~10 minutes. Job IDs
    # still rise across restarts thanks to FirstJobId (see next_job_id).
    start_daemon slurmctld slurmctld -c
    wait_for "slurmctld" scontrol ping \
        || { show_log "$LOG/slurmctld.log"; die "slurmctld does not answer"; }
    log "slurmctld up on 127.0.0.1:$CTLD_PORT"
}

add_qos_and_associations() {
    # Leonardo's Booster QOSes; `normal` is the default.
    sacctmgr_q add qos normal
    sacctmgr_q modify qos normal set MaxWall=1-00:00:00 Flags=DenyOnLimit
    sacctmgr_q add qos boost_qos_dbg
    sacctmgr_q modify qos boost_qos_dbg set MaxWall=00:30:00 MaxTRESPerJob=node=2 \
        Flags=DenyOnLimit
    # The Data Centric partition's debug QOS (profiles/leonardo-debug).
    sacctmgr_q add qos dcgp_qos_dbg
    sacctmgr_q modify qos dcgp_qos_dbg set MaxWall=00:30:00 MaxTRESPerJob=node=2 \
        Flags=DenyOnLimit
    # Partition QOS of the CPU partitions: no GPU at all, refused at submission (DenyOnLimit).
    # gres/gpu is a known TRES only now that slurmctld has registered AccountingStorageTRES.
    sacctmgr_q add qos cpu_nogpu
    sacctmgr -i modify qos cpu_nogpu set MaxTRESPerJob=gres/gpu=0 Flags=DenyOnLimit >/dev/null \
        || die "could not set MaxTRESPerJob=gres/gpu=0 on QOS cpu_nogpu"

    sacctmgr_q add account "$ACCOUNT" Cluster="$CLUSTER" Description=climai-tests \
        Organization=climai
    sacctmgr_q add user root Account="$ACCOUNT" Cluster="$CLUSTER" DefaultAccount="$ACCOUNT"
    sacctmgr_q modify account "$ACCOUNT" set QOS=normal,boost_qos_dbg,dcgp_qos_dbg DefaultQOS=normal
    sacctmgr_q modify user root set QOS=normal,boost_qos_dbg,dcgp_qos_dbg DefaultQOS=normal
    sacctmgr_q modify user root set DefaultAccount="$ACCOUNT"
    sacctmgr -n -P show assoc where account="$ACCOUNT" user=root format=user | grep -qx root \
        || die "association root/$ACCOUNT missing"
}

add_partition_qos() {
    if [[ ! -e "$STATE/mysql/.climai_qos_ready" ]]; then
        touch "$STATE/mysql/.climai_qos_ready"
        write_configs
        scontrol reconfigure >/dev/null || { show_log "$LOG/slurmctld.log"; die "reconfigure failed"; }
    fi
    wait_for "partition QOS" bash -c \
        "scontrol show partition dcgp_usr_prod | grep -q 'QoS=cpu_nogpu'" \
        || { show_log "$LOG/slurmctld.log"; die "partition QOS cpu_nogpu not applied"; }
}

start_slurmd() {
    start_daemon slurmd slurmd
    wait_for "node $NODE idle" bash -c "sinfo -h -n '$NODE' -o '%t' | grep -qx 'idle'" \
        || { sinfo -N -l >&2 || true; show_log "$LOG/slurmd.log"; show_log "$LOG/slurmctld.log";
             die "node $NODE is not idle"; }
    log "slurmd up, node $NODE idle"
}

# ----------------------------------------------------------------------------------- start/stop
export_env() {
    export SLURM_CONF="$STATE/slurm.conf"
}

cmd_start() {
    need_root
    secure_state
    packages_installed || die "packages missing; run: $0 install"
    local t0=$SECONDS
    export_env
    if alive_pid "$RUN/slurmctld.pid" >/dev/null && scontrol ping >/dev/null 2>&1; then
        link_system_conf
        log "already running (state $STATE); stop it first to restart"
        return 0
    fi
    cmd_stop   # leftovers of a half-started or crashed cluster
    secure_state
    mkdir -p "$LOG" "$RUN"
    DB_PASS="$(db_password)"
    [[ -n "$DB_PASS" ]] || die "could not generate a database password in $STATE/db_password"
    DB_PORT="$(free_port 13306)"
    DBD_PORT="$(free_port 16819)"
    CTLD_PORT="$(free_port 16817)"
    SLURMD_PORT="$(free_port 16818)"
    [[ $DBD_PORT != "$CTLD_PORT" && $SLURMD_PORT != "$CTLD_PORT" && $SLURMD_PORT != "$DBD_PORT" ]] \
        || die "port clash: $DBD_PORT $CTLD_PORT $SLURMD_PORT"
    write_configs
    link_system_conf

    start_munge
    start_mariadb
    start_slurmdbd
    add_cluster_account
    FIRST_JOB_ID="$(next_job_id)"
    write_configs
    start_slurmctld
    add_qos_and_associations
    add_partition_qos
    start_slurmd
    wait_for "sacct" sacct -n -a -S now-1minutes || die "sacct does not answer"
    log "cluster ready in $((SECONDS - t0)) s (state $STATE; eval \"\$($0 env)\")"
}

# Send TERM to the process in a PID file and wait for it to exit (KILL after 30 s).
stop_pidfile() {
    local name="$1" pidfile="$2" pid i
    pid="$(alive_pid "$pidfile")" || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name ($pid)"; rm -f "$pidfile"; return 0; }
        sleep 0.5
    done
    log "$name ($pid) ignored TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# Cancel every job and wait (at most 30 s) until none is left, so that no slurmstepd outlives
# slurmd and no job is left behind in the saved state.
cancel_jobs() {
    alive_pid "$RUN/slurmctld.pid" >/dev/null || return 0
    export_env
    local active="PD,CF,R,S,CG"   # pending, configuring, running, suspended, completing
    local jobs
    # squeue fails when munged or slurmctld is already gone: then there is nothing to cancel
    jobs="$(squeue -h -t "$active" -o %i 2>/dev/null | tr '\n' ' ')" || return 0
    [[ -n "${jobs// /}" ]] || return 0
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel --full --quiet $jobs 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
        [[ -z "$(squeue -h -t "$active" -o %i 2>/dev/null)" ]] && return 0
        sleep 0.5
    done
    log "jobs still active after 30 s: $(squeue -h -t "$active" -o '%i:%T' | tr '\n' ' ')"
}

cmd_stop() {
    need_root
    # nothing to stop without a state folder; never act on PID files in a folder not ours
    [[ -e "$STATE" || -L "$STATE" ]] || { unlink_system_conf; return 0; }
    secure_state
    cancel_jobs || true
    # Reverse order of start. Only processes recorded in our PID files are touched.
    stop_pidfile slurmd "$RUN/slurmd.pid"
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadb "$RUN/mariadb.pid"
    stop_pidfile munged "$STATE/munge/munged.pid"
    unlink_system_conf
}

cmd_status() {
    export_env
    local rc=0
    echo "== sinfo"; sinfo || rc=1
    echo "== squeue"; squeue || rc=1
    echo "== sacctmgr show assoc"
    sacctmgr show assoc format=cluster,account,user,partition,qos,defaultqos || rc=1
    echo "== sacctmgr show qos"
    sacctmgr show qos format=name,maxwall,maxtres,flags || rc=1
    return "$rc"
}

cmd_env() {
    echo "export SLURM_CONF=$STATE/slurm.conf"
    echo "export SLURM_ACCOUNT=$ACCOUNT"
    echo "export SBATCH_ACCOUNT=$ACCOUNT"
    echo "export SALLOC_ACCOUNT=$ACCOUNT"
    echo "export CLIMAI_SLURM_STATE=$STATE"
}

main() {
    case "${1:-}" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
    esac
}

main "$@"
