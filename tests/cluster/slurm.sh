#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/cluster/ (nox -s slurm runs `slurm.sh run pytest tests/cluster`).
#
#   tests/cluster/slurm.sh install         install the Debian packages when missing (nothing started; .ci/run does this
#                                          while the test suite runs)
#   tests/cluster/slurm.sh up              install (Debian packages, when missing), configure, start; wait for idle
#   tests/cluster/slurm.sh down            stop what `up` started
#   tests/cluster/slurm.sh run CMD ARGS    up, run CMD with SLURM_CONF set, then down whatever happened (exit: CMD's)
#
# As root (or with passwordless sudo for the install and the daemons). State, logs and slurm.conf live under
# $TAPA_LAB_SLURM_DIR (default /tmp/tapa-lab-slurm); clients find the cluster through SLURM_CONF=<that>/slurm.conf.
# The node is this host with its real CPUs and memory (`slurmd -C`); one partition `debug` (default, MaxTime 60 min),
# no accounting (sacct answers nothing; the lab asks squeue), proctrack/linuxproc (no cgroups needed), and short
# MinJobAge (5 s) and cred_expire (20 s: a requeued job starts again after that, 120 s by default). EnforcePartLimits
# stays at SLURM's default (NO: a job over the partition's MaxTime is queued and never starts; the lab refuses it).
set -euo pipefail

DIR=${TAPA_LAB_SLURM_DIR:-/tmp/tapa-lab-slurm}
CONF=$DIR/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)

log() { echo "slurm.sh: $*" >&2; }

install_packages() {
    local missing=()
    for command in slurmctld slurmd sbatch munged; do
        command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] || missing+=("$command")
    done
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # policy-rc.d answers 101: the packages' services are not started (this script starts its own daemons)
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d.tapa-lab >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d.tapa-lab
    [ -e /usr/sbin/policy-rc.d ] || $SUDO ln -s /usr/sbin/policy-rc.d.tapa-lab /usr/sbin/policy-rc.d
    $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    [ "$(readlink /usr/sbin/policy-rc.d || true)" = /usr/sbin/policy-rc.d.tapa-lab ] && $SUDO rm /usr/sbin/policy-rc.d
    $SUDO rm -f /usr/sbin/policy-rc.d.tapa-lab
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged is running already (a real cluster's, or a previous one): use it, leave it running
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        $SUDO mungekey --create --keyfile=/etc/munge/munge.key
    fi
    $SUDO chown munge:munge /etc/munge/munge.key && $SUDO chmod 600 /etc/munge/munge.key
    $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
    $SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
    $SUDO runuser -u munge -- /usr/sbin/munged
    touch "$DIR/munged.ours"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    log "munged did not answer"; return 1
}

write_conf() {
    local host node
    host=$(hostname -s)
    node=$(/usr/sbin/slurmd -C | head -1)  # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..: this machine
    cat >"$CONF" <<EOF
# Written by tests/cluster/slurm.sh: a one-node cluster on $host.
ClusterName=tapa-lab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=cred_expire=20
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=5
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=debug Nodes=$host Default=YES MaxTime=60 State=UP
EOF
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

up() {
    install_packages
    down quiet
    rm -rf "$DIR" && mkdir -p "$DIR/state" "$DIR/spool"
    start_munge
    write_conf
    export SLURM_CONF=$CONF
    $SUDO /usr/sbin/slurmctld -f "$CONF" -c  # -c: a fresh state (no jobs of an earlier cluster)
    $SUDO /usr/sbin/slurmd -f "$CONF"
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo --noheader --Node --format=%t 2>/dev/null || true)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        log "the node is '${state:-unreachable}', not idle, after 60 s; logs:"
        tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
        down quiet; return 1
    fi
    log "up: $(sinfo --version), node $(hostname -s) idle ($(/usr/sbin/slurmd -C | head -1 | grep -o 'CPUs=[0-9]*'))"
    log "export SLURM_CONF=$CONF"
}

down() {
    local name
    for name in slurmd slurmctld; do
        if pid_alive "$DIR/$name.pid"; then
            $SUDO kill "$(cat "$DIR/$name.pid" 2>/dev/null)" 2>/dev/null || true
            for _ in $(seq 100); do pid_alive "$DIR/$name.pid" || break; sleep 0.1; done
            pid_alive "$DIR/$name.pid" && $SUDO kill -9 "$(cat "$DIR/$name.pid" 2>/dev/null)" 2>/dev/null || true
        fi
        rm -f "$DIR/$name.pid"
    done
    if [ -e "$DIR/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
        $SUDO kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$DIR/munged.ours"
    fi
    [ "${1:-}" = quiet ] || log "down"
}

case "${1:-}" in
    install) install_packages ;;
    up) up ;;
    down) down ;;
    run)
        shift
        [ $# -gt 0 ] || { log "run needs a command"; exit 2; }
        trap down EXIT
        up
        export SLURM_CONF=$CONF
        status=0
        "$@" || status=$?
        exit "$status"
        ;;
    *) echo "usage: $0 install | up | down | run CMD [ARGS...]" >&2; exit 2 ;;
esac
