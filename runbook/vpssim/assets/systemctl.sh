#!/bin/bash
# systemctl of a vpssim host: a small stand-in for systemd's, bind-mounted over
# /usr/bin/systemctl inside each simulated host (there is no systemd there).
#
# It runs the unit files the deploy tool installs in /etc/systemd/system:
#   [Service] ExecStart= (with "\" continuations; ${VAR} anywhere and a whole
#             word $VAR expanded from Environment=/EnvironmentFile= the way
#             systemd does, %n/%N/%% specifiers), ExecStartPre=,
#             EnvironmentFile= ("-" = optional), Environment=, User=, Group=,
#             WorkingDirectory=, UMask=, Restart=, RestartSec=, KillSignal=,
#             TimeoutStopSec=
#   [Install] WantedBy= (enable links the unit into WANTEDBY.wants/)
# Hardening and resource keys are ignored (systemd-analyze checks them).
#
# Commands: daemon-reload, start, stop, restart, enable [--now], disable
# [--now], is-active, is-enabled, is-failed, status, show [-p P[,P]] [--value],
# kill [-s SIG], reset-failed, cat. Changing commands need root, as with
# systemd ("Interactive authentication required." otherwise).
#
# A started unit gets a supervisor (the Restart= loop: restart after
# RestartSec unless stopped). The service runs in its own session, stdout and
# stderr appended to /var/log/UNIT.log; its PID is in /run/UNIT.pid. stop
# sends KillSignal (SIGTERM) to the service's process group, waits
# TimeoutStopSec (30 s here), then SIGKILL.
set -uo pipefail
shopt -s nullglob

UNITDIR=/etc/systemd/system
STATE=/run/systemctl-sim
LOGDIR=/var/log
SELF=$(readlink -f "${BASH_SOURCE[0]}")
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

err() { echo "$*" >&2; }

unit_name() {
  local u=$1
  [[ $u == *.* ]] || u=$u.service
  printf '%s' "$u"
}

trim() { # trim VAR: strip blanks around $VAR in place
  local -n _v=$1
  _v=${_v#"${_v%%[![:space:]]*}"}
  _v=${_v%"${_v##*[![:space:]]}"}
}

alive() { # alive PID: exists and is not a zombie
  local p=${1:-} s
  [[ $p =~ ^[0-9]+$ ]] || return 1
  { read -r s </proc/"$p"/stat; } 2>/dev/null || return 1
  s=${s##*) }
  [[ ${s%% *} != [ZX] ]]
}

secs() { # secs VALUE: systemd time span -> seconds (decimal allowed)
  local v=${1// /}
  case $v in
    infinity) echo 1000000 ;;
    *ms) v=${v%ms}; printf '%d.%03d\n' $((v / 1000)) $((v % 1000)) ;;
    *min) echo $((${v%min} * 60)) ;;
    *s) echo "${v%s}" ;;
    '') echo 0 ;;
    *) echo "$v" ;;
  esac
}

tenths() { # tenths SECONDS: integer tenths of a second
  local s=$1 i f
  i=${s%%.*}; f=0
  [[ $s == *.* ]] && f=${s#*.}0 && f=${f:0:1}
  echo $((10#${i:-0} * 10 + 10#$f))
}

# --- unit files ------------------------------------------------------------

load_unit() { # load_unit UNIT: parse UNITDIR/UNIT into U_* (1 if missing)
  local f=$UNITDIR/$1 sect="" line acc="" key val
  U_FILE=$f U_DESC="" U_EXEC="" U_USER="" U_GROUP="" U_WD="" U_UMASK=""
  U_RESTART=no U_RESTARTSEC=1 U_KILLSIG=SIGTERM U_TIMEOUT=30
  U_PRE=() U_ENVFILES=() U_ENVS=() U_WANTEDBY=()
  [[ -f $f ]] || return 1
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    if [[ -n $acc && $line =~ ^[[:space:]]*[\#\;] ]]; then
      continue # systemd skips comment lines inside a continuation
    fi
    if [[ $line == *\\ ]]; then
      acc+="${line%\\} "
      continue
    fi
    line=$acc$line
    acc=""
    trim line
    [[ -z $line || $line == \#* || $line == \;* ]] && continue
    if [[ $line == \[*\] ]]; then
      sect=${line:1:${#line}-2}
      continue
    fi
    [[ $line == *=* ]] || continue
    key=${line%%=*}
    val=${line#*=}
    trim key
    trim val
    case $sect.$key in
      Unit.Description) U_DESC=$val ;;
      Service.ExecStart) U_EXEC=$val ;;
      Service.ExecStartPre) if [[ -z $val ]]; then U_PRE=(); else U_PRE+=("$val"); fi ;;
      Service.EnvironmentFile) if [[ -z $val ]]; then U_ENVFILES=(); else U_ENVFILES+=("$val"); fi ;;
      Service.Environment) if [[ -z $val ]]; then U_ENVS=(); else U_ENVS+=("$val"); fi ;;
      Service.User) U_USER=$val ;;
      Service.Group) U_GROUP=$val ;;
      Service.WorkingDirectory) U_WD=$val ;;
      Service.UMask) U_UMASK=$val ;;
      Service.Restart) U_RESTART=$val ;;
      Service.RestartSec) U_RESTARTSEC=$(secs "$val") ;;
      Service.KillSignal) U_KILLSIG=$val ;;
      Service.TimeoutStopSec | Service.TimeoutSec) U_TIMEOUT=$(secs "$val") ;;
      Install.WantedBy | Install.RequiredBy) read -ra _w <<<"$val" && U_WANTEDBY+=("${_w[@]}") ;;
    esac
  done <"$f"
  return 0
}

split_words() { # split_words STRING: systemd-style unquoting into WORDS
  local s=$1 n=${#1} i=0 c w="" inword=0 q=""
  WORDS=()
  while ((i < n)); do
    c=${s:i:1}
    if [[ -n $q ]]; then
      if [[ $c == "$q" ]]; then
        q=""
      elif [[ $c == \\ ]]; then
        i=$((i + 1))
        w+=${s:i:1}
      else
        w+=$c
      fi
    else
      case $c in
        ' ' | $'\t' | $'\n')
          if ((inword)); then WORDS+=("$w"); w=""; inword=0; fi ;;
        \" | \') q=$c; inword=1 ;;
        \\) i=$((i + 1)); w+=${s:i:1}; inword=1 ;;
        *) w+=$c; inword=1 ;;
      esac
    fi
    i=$((i + 1))
  done
  ((inword)) && WORDS+=("$w")
  return 0
}

declare -A ENV=()
ENVKEYS=()
setenv() {
  [[ -v "ENV[$1]" ]] || ENVKEYS+=("$1")
  ENV[$1]=$2
}

load_env() { # Environment= first, then EnvironmentFile= (files win, as in systemd)
  local e f opt line k v w
  ENV=()
  ENVKEYS=()
  for e in "${U_ENVS[@]}"; do
    split_words "$e"
    for w in "${WORDS[@]}"; do
      [[ $w == *=* ]] && setenv "${w%%=*}" "${w#*=}"
    done
  done
  for f in "${U_ENVFILES[@]}"; do
    opt=0
    [[ $f == -* ]] && opt=1 && f=${f#-}
    if [[ ! -r $f ]]; then
      ((opt)) && continue
      err "$UNIT: Failed to load environment files: No such file or directory ($f)"
      return 1
    fi
    while IFS= read -r line || [[ -n $line ]]; do
      line=${line%$'\r'}
      trim line
      [[ -z $line || $line == \#* || $line == \;* || $line != *=* ]] && continue
      k=${line%%=*}
      v=${line#*=}
      trim k
      trim v
      if [[ ${#v} -ge 2 && ( ($v == \"*\" ) || ($v == \'*\') ) ]]; then
        v=${v:1:${#v}-2}
      fi
      setenv "$k" "$v"
    done <"$f"
  done
}

expand_braces() { # ${NAME} -> value (one word), $$ -> $; a lone $ stays
  local s=$1 out="" name
  while [[ $s == *'$'* ]]; do
    out+=${s%%\$*}
    s=${s#*\$}
    if [[ $s == '$'* ]]; then
      out+='$'
      s=${s:1}
    elif [[ $s == '{'*'}'* ]]; then
      name=${s:1}
      name=${name%%\}*}
      s=${s#*\}}
      out+=${ENV[$name]-}
    else
      out+='$'
    fi
  done
  EXPANDED=$out$s
}

build_argv() { # build_argv CMDLINE: ARGV from an Exec line, as systemd does
  local line=$1 w parts
  ARGV=()
  line=${line//%%/$'\001'}
  line=${line//%n/$UNIT}
  line=${line//%N/${UNIT%.*}}
  line=${line//$'\001'/%}
  split_words "$line"
  for w in "${WORDS[@]}"; do
    if [[ $w =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      read -ra parts <<<"${ENV[${BASH_REMATCH[1]}]-}" # a whole-word $VAR splits
      ARGV+=("${parts[@]}")
    else
      expand_braces "$w"
      ARGV+=("$EXPANDED")
    fi
  done
  IGNORE_FAIL=0
  while [[ ${#ARGV[@]} -gt 0 && ${ARGV[0]} == [-+!:@]* ]]; do
    [[ ${ARGV[0]} == -* ]] && IGNORE_FAIL=1
    ARGV[0]=${ARGV[0]:1}
  done
  [[ ${#ARGV[@]} -gt 0 && -n ${ARGV[0]} ]]
}

journal() { # journal MSG: a line in the unit's log, journal-style
  printf '%s %s systemd[1]: %s: %s\n' "$(date '+%b %d %H:%M:%S')" "$HOSTNAME" "$UNIT" "$*" >>"$LOGDIR/$UNIT.log"
}

spawn() { # spawn CMDLINE: run it as the unit would, in the background; PID in $!
  local home=/root user=root grp
  local envv=("PATH=$DEFAULT_PATH" "LANG=C.UTF-8")
  local priv=()
  build_argv "$1" || { err "$UNIT: empty command line"; return 1; }
  if [[ -n $U_USER && $U_USER != root && $U_USER != 0 ]]; then
    user=$U_USER
    if ! id -u "$user" >/dev/null 2>&1; then
      journal "Failed to determine user credentials: No such process"
      journal "Failed at step USER spawning ${ARGV[0]}: No such process"
      (exit 217) &
      return 0
    fi
    grp=${U_GROUP:-$(id -gn "$user")}
    home=$(getent passwd "$user" | cut -d: -f6)
    priv=(setpriv --reuid="$user" --regid="$grp" --init-groups --)
  fi
  envv+=("HOME=$home" "USER=$user" "LOGNAME=$user" "SHELL=/bin/sh" "INVOCATION_ID=vpssim")
  local k
  for k in "${ENVKEYS[@]}"; do envv+=("$k=${ENV[$k]}"); done
  local wd=${U_WD:-/}
  wd=${wd#-}
  [[ $wd == "~" ]] && wd=$home
  (
    cd "$wd" 2>/dev/null || { journal "Changing to the requested working directory failed: No such file or directory"; exit 200; }
    [[ -n $U_UMASK ]] && umask "$U_UMASK"
    # Not a process group leader (no job control here), so setsid does not
    # fork: $! is the service itself, leader of its own session and group.
    exec setsid "${priv[@]}" env -i "${envv[@]}" "${ARGV[@]}"
  ) </dev/null >>"$LOGDIR/$UNIT.log" 2>&1 &
}

# --- state -----------------------------------------------------------------

main_pid() { local p; p=$(cat "/run/$UNIT.pid" 2>/dev/null) && alive "$p" && echo "$p"; }
super_pid() { local p; p=$(cat "$STATE/$UNIT.super" 2>/dev/null) && alive "$p" && echo "$p"; }

unit_state() { # sets ACTIVE SUB MAINPID
  MAINPID=$(main_pid) || MAINPID=0
  if [[ $MAINPID != 0 ]]; then
    ACTIVE=active SUB=running
  elif super_pid >/dev/null; then
    ACTIVE=activating SUB=auto-restart
  elif [[ -s $STATE/$UNIT.result && $(<"$STATE/$UNIT.result") != 0 ]]; then
    ACTIVE=failed SUB=failed
  else
    ACTIVE=inactive SUB=dead
  fi
}

enabled_state() { # prints enabled/disabled
  local l
  for l in "$UNITDIR"/*.wants/"$UNIT" "$UNITDIR"/*.requires/"$UNIT"; do
    [[ -L $l || -e $l ]] && { echo enabled; return; }
  done
  echo disabled
}

need_root() { # need_root VERB
  if ((EUID != 0)); then
    err "Failed to $1: Interactive authentication required."
    [[ $1 == "start "* || $1 == "stop "* || $1 == "restart "* ]] && err "See system logs and 'systemctl status ${1#* }' for details."
    exit 1
  fi
}

lock_unit() { # serialize changes of one unit (fd 9)
  mkdir -p "$STATE"
  exec 9>"$STATE/$UNIT.lock"
  flock 9
}

# --- the supervisor (Restart=) -------------------------------------------------

supervise() {
  echo $$ >"$STATE/$UNIT.super"
  local rc restarts=0 pre ok clean
  while :; do
    [[ -e $STATE/$UNIT.stop ]] && break
    if ! load_unit "$UNIT" || ! load_env; then
      echo 1 >"$STATE/$UNIT.result"
      break
    fi
    ok=1
    for pre in "${U_PRE[@]}"; do
      spawn "$pre" || { ok=0; break; }
      wait $!
      rc=$?
      if ((rc != 0 && !IGNORE_FAIL)); then
        journal "Control process exited, code=exited, status=$rc/FAILURE"
        ok=0
        break
      fi
    done
    # A stop that came while this iteration loaded the unit or ran
    # ExecStartPre: start nothing.
    [[ -e $STATE/$UNIT.stop ]] && break
    if ((ok)); then
      if spawn "$U_EXEC"; then
        local pid=$!
        echo "$pid" >"/run/$UNIT.pid"
        # do_stop touches .stop before it looks for the PID file, and we
        # wrote the PID file before looking for .stop: one of us sees the
        # other, so a stop racing this spawn never leaves the service
        # running without its supervisor.
        if [[ -e $STATE/$UNIT.stop ]]; then
          kill -s "${U_KILLSIG#SIG}" -- "-$pid" 2>/dev/null || kill -s "${U_KILLSIG#SIG}" "$pid" 2>/dev/null
        fi
        date +%s >"$STATE/$UNIT.since"
        rm -f "$STATE/$UNIT.result"
        journal "Started ${U_DESC:-$UNIT}."
        wait "$pid"
        rc=$?
        rm -f "/run/$UNIT.pid"
      else
        rc=203
      fi
    fi
    echo "$rc" >"$STATE/$UNIT.result"
    [[ -e $STATE/$UNIT.stop ]] && break
    if ((rc > 128)); then
      journal "Main process exited, code=killed, status=$((rc - 128))"
    else
      journal "Main process exited, code=exited, status=$rc"
    fi
    clean=0
    case $rc in 0 | 129 | 130 | 141 | 143) clean=1 ;; esac
    case $U_RESTART in
      always) ;;
      on-failure) ((clean)) && break ;;
      on-abnormal | on-abort | on-watchdog) ((rc > 128 && !clean)) || break ;;
      on-success) ((clean)) || break ;;
      *) break ;;
    esac
    local t
    for ((t = $(tenths "$U_RESTARTSEC"); t > 0; t--)); do
      [[ -e $STATE/$UNIT.stop ]] && break 2
      sleep 0.1
    done
    restarts=$((restarts + 1))
    echo "$restarts" >"$STATE/$UNIT.restarts"
    journal "Scheduled restart job, restart counter is at $restarts."
  done
  rm -f "$STATE/$UNIT.super"
}

# --- commands ----------------------------------------------------------------

do_start() {
  if ! load_unit "$UNIT"; then
    err "Failed to start $UNIT: Unit $UNIT not found."
    return 5
  fi
  lock_unit
  if super_pid >/dev/null || main_pid >/dev/null; then
    return 0
  fi
  rm -f "$STATE/$UNIT.stop" "$STATE/$UNIT.restarts" "$STATE/$UNIT.result" "/run/$UNIT.pid"
  mkdir -p "$LOGDIR"
  setsid bash "$SELF" __supervise "$UNIT" </dev/null >>"$LOGDIR/$UNIT.log" 2>&1 9>&- &
  echo $! >"$STATE/$UNIT.super" # setsid does not fork here: $! is the supervisor
  local t
  for ((t = 0; t < 100; t++)); do # like systemd for Type=simple: return once forked
    [[ -e /run/$UNIT.pid || -s $STATE/$UNIT.result ]] && break
    super_pid >/dev/null || break
    sleep 0.05
  done
  if ! super_pid >/dev/null && [[ -s $STATE/$UNIT.result && $(<"$STATE/$UNIT.result") != 0 ]]; then
    err "Job for $UNIT failed because the control process exited with error code."
    err "See \"systemctl status $UNIT\" and \"$LOGDIR/$UNIT.log\" for details."
    return 1
  fi
  return 0
}

stop_main() { # stop_main PID: KillSignal to its group, TimeoutStopSec, then SIGKILL
  local main=$1 t sig=${U_KILLSIG#SIG}
  journal "Stopping ${U_DESC:-$UNIT}..."
  kill -s "$sig" -- "-$main" 2>/dev/null || kill -s "$sig" "$main" 2>/dev/null
  for ((t = $(tenths "$U_TIMEOUT"); t > 0; t--)); do
    alive "$main" || break
    sleep 0.1
  done
  if alive "$main"; then
    journal "State 'stop-sigterm' timed out. Killing."
  fi
  kill -s KILL -- "-$main" 2>/dev/null # the rest of the service's group, as systemd's final SIGKILL
  for ((t = 0; t < 50; t++)); do
    alive "$main" || break
    sleep 0.1
  done
}

do_stop() {
  local main super t m
  lock_unit
  main=$(main_pid) || main=""
  super=$(super_pid) || super=""
  if [[ -z $main && -z $super ]]; then
    rm -f "/run/$UNIT.pid" "$STATE/$UNIT.super" "$STATE/$UNIT.since"
    return 0
  fi
  touch "$STATE/$UNIT.stop"
  load_unit "$UNIT" || true
  [[ -n $main ]] && stop_main "$main"
  # Wait for the supervisor to see .stop. It may be between its own check
  # and the spawn (loading the unit, ExecStartPre, a restart): a service it
  # starts now is stopped here too, never left behind without a supervisor
  # (seen under load: "Stopped" with no "Stopping", then the next start
  # failed with the old process's port in use).
  for ((t = 0; t < 50; t++)); do
    if m=$(main_pid) && [[ $m != "$main" ]]; then
      main=$m
      stop_main "$main"
    fi
    [[ -n $super ]] && alive "$super" || break
    sleep 0.1
  done
  if [[ -n $super ]] && alive "$super"; then
    kill -KILL "$super" 2>/dev/null
    m=$(main_pid) && stop_main "$m"
  fi
  rm -f "/run/$UNIT.pid" "$STATE/$UNIT.super" "$STATE/$UNIT.stop" "$STATE/$UNIT.result" "$STATE/$UNIT.since"
  journal "Stopped ${U_DESC:-$UNIT}."
  return 0
}

do_enable() {
  if ! load_unit "$UNIT"; then
    err "Failed to enable unit: Unit file $UNIT does not exist."
    return 1
  fi
  local t
  [[ ${#U_WANTEDBY[@]} -gt 0 ]] || {
    err "The unit files have no installation config (WantedBy=, RequiredBy=, ...)."
    return 0
  }
  for t in "${U_WANTEDBY[@]}"; do
    mkdir -p "$UNITDIR/$t.wants"
    if [[ ! -L $UNITDIR/$t.wants/$UNIT ]]; then
      ln -sf "$UNITDIR/$UNIT" "$UNITDIR/$t.wants/$UNIT"
      err "Created symlink $UNITDIR/$t.wants/$UNIT → $UNITDIR/$UNIT."
    fi
  done
}

do_disable() {
  local l
  for l in "$UNITDIR"/*.wants/"$UNIT" "$UNITDIR"/*.requires/"$UNIT"; do
    rm -f "$l"
    err "Removed \"$l\"."
  done
}

do_status() {
  local since ago
  if ! load_unit "$UNIT"; then
    err "Unit $UNIT could not be found."
    return 4
  fi
  unit_state
  echo "● $UNIT - ${U_DESC:-$UNIT}"
  echo "     Loaded: loaded ($U_FILE; $(enabled_state); preset: enabled)"
  case $ACTIVE in
    active)
      since=$(cat "$STATE/$UNIT.since" 2>/dev/null || date +%s)
      ago=$(($(date +%s) - since))
      echo "     Active: active (running) since $(date -d "@$since" '+%a %Y-%m-%d %H:%M:%S %Z'); ${ago}s ago"
      echo "   Main PID: $MAINPID ($(cat /proc/"$MAINPID"/comm 2>/dev/null))"
      ;;
    activating) echo "     Active: activating (auto-restart) (Result: exit-code)" ;;
    failed) echo "     Active: failed (Result: exit-code, status=$(<"$STATE/$UNIT.result"))" ;;
    *) echo "     Active: inactive (dead)" ;;
  esac
  if [[ -r $LOGDIR/$UNIT.log ]]; then
    echo
    tail -n 10 "$LOGDIR/$UNIT.log"
  fi
  [[ $ACTIVE == active ]] && return 0
  return 3
}

show_prop() { # show_prop NAME: prints its value
  case $1 in
    Id | Names) echo "$UNIT" ;;
    Description) echo "${U_DESC:-$UNIT}" ;;
    LoadState) [[ -f $UNITDIR/$UNIT ]] && echo loaded || echo not-found ;;
    ActiveState) echo "$ACTIVE" ;;
    SubState) echo "$SUB" ;;
    MainPID) echo "$MAINPID" ;;
    UnitFileState) [[ -f $UNITDIR/$UNIT ]] && enabled_state || echo "" ;;
    FragmentPath) [[ -f $UNITDIR/$UNIT ]] && echo "$UNITDIR/$UNIT" || echo "" ;;
    NRestarts) cat "$STATE/$UNIT.restarts" 2>/dev/null || echo 0 ;;
    ExecMainStatus) cat "$STATE/$UNIT.result" 2>/dev/null || echo 0 ;;
    Result) [[ $ACTIVE == failed ]] && echo exit-code || echo success ;;
    User) echo "$U_USER" ;;
    Group) echo "$U_GROUP" ;;
    WorkingDirectory) echo "$U_WD" ;;
    Restart) echo "$U_RESTART" ;;
    KillSignal) echo "$U_KILLSIG" ;;
    *) echo "" ;;
  esac
}

do_show() {
  local p list=("${PROPS[@]}")
  load_unit "$UNIT" || true
  unit_state
  [[ ${#list[@]} -gt 0 ]] || list=(Id Description LoadState ActiveState SubState MainPID UnitFileState FragmentPath NRestarts ExecMainStatus Result User Group WorkingDirectory Restart KillSignal)
  for p in "${list[@]}"; do
    if ((VALUE)); then show_prop "$p"; else echo "$p=$(show_prop "$p")"; fi
  done
}

do_kill() {
  local main sig=${SIGNAL:-SIGTERM}
  main=$(main_pid) || { err "Failed to kill unit $UNIT: No main process to kill"; return 1; }
  sig=${sig#SIG}
  kill -s "$sig" -- "-$main" 2>/dev/null || kill -s "$sig" "$main"
}

boot() { # start every enabled unit (run by the host's init at boot)
  local l
  for l in "$UNITDIR"/*.wants/*; do
    UNIT=${l##*/}
    [[ -f $UNITDIR/$UNIT ]] && (do_start) || true
  done
}

# --- arguments -----------------------------------------------------------------

CMD="" UNITS=() NOW=0 QUIET=0 VALUE=0 SIGNAL="" PROPS=()
while (($#)); do
  case $1 in
    --now) NOW=1 ;;
    -q | --quiet) QUIET=1 ;;
    --value) VALUE=1 ;;
    -p | --property) IFS=, read -ra _p <<<"${2-}" && PROPS+=("${_p[@]}") && shift ;;
    -p*) IFS=, read -ra _p <<<"${1#-p}" && PROPS+=("${_p[@]}") ;;
    --property=*) IFS=, read -ra _p <<<"${1#*=}" && PROPS+=("${_p[@]}") ;;
    -s | --signal) SIGNAL=${2-} && shift ;;
    --signal=*) SIGNAL=${1#*=} ;;
    -n | --lines) shift ;;
    --no-pager | --no-block | --system | --full | -l | --no-legend | --no-ask-password | --plain | -f | --force | --lines=* | --kill-whom=* | --kill-who=*) ;;
    --version) echo "systemd 252 (vpssim fake systemctl)" && exit 0 ;;
    -*) err "systemctl (vpssim): unsupported option $1" && exit 1 ;;
    *) if [[ -z $CMD ]]; then CMD=$1; else UNITS+=("$(unit_name "$1")"); fi ;;
  esac
  shift
done

needs_unit() {
  if [[ ${#UNITS[@]} -eq 0 ]]; then
    err "Too few arguments."
    exit 1
  fi
}

rc=0
case $CMD in
  __supervise) UNIT=${UNITS[0]}; supervise; exit 0 ;;
  __boot) boot; exit 0 ;;
  daemon-reload | daemon-reexec | reset-failed)
    need_root "reload daemon"
    if [[ $CMD == reset-failed ]]; then
      for UNIT in "${UNITS[@]}"; do rm -f "$STATE/$UNIT.result"; done
    fi
    ;;
  start | stop | restart | try-restart | reload-or-restart)
    needs_unit
    for UNIT in "${UNITS[@]}"; do
      need_root "$CMD $UNIT"
      case $CMD in
        start) (do_start) || rc=$? ;;
        stop) (do_stop) || rc=$? ;;
        try-restart) if main_pid >/dev/null; then (do_stop) && (do_start) || rc=$?; fi ;;
        *) { (do_stop) && (do_start); } || rc=$? ;;
      esac
    done
    ;;
  enable | disable)
    needs_unit
    need_root "$CMD unit"
    for UNIT in "${UNITS[@]}"; do
      if [[ $CMD == enable ]]; then
        (do_enable) || { rc=$?; continue; }
        ((NOW)) && { (do_start) || rc=$?; }
      else
        (do_disable) || rc=$?
        ((NOW)) && { (do_stop) || rc=$?; }
      fi
    done
    ;;
  is-active | is-failed)
    needs_unit
    rc=3
    [[ $CMD == is-failed ]] && rc=1
    all=1
    for UNIT in "${UNITS[@]}"; do
      unit_state
      ((QUIET)) || echo "$ACTIVE"
      if [[ $CMD == is-active ]]; then [[ $ACTIVE == active ]] || all=0; else [[ $ACTIVE == failed ]] || all=0; fi
    done
    ((all)) && rc=0
    ;;
  is-enabled)
    needs_unit
    for UNIT in "${UNITS[@]}"; do
      if [[ ! -f $UNITDIR/$UNIT ]]; then
        err "Failed to get unit file state for $UNIT: No such file or directory"
        rc=1
        continue
      fi
      st=$(enabled_state)
      ((QUIET)) || echo "$st"
      [[ $st == enabled ]] || rc=1
    done
    ;;
  status)
    needs_unit
    first=1
    for UNIT in "${UNITS[@]}"; do
      ((first)) || echo
      first=0
      do_status || rc=$?
    done
    ;;
  show)
    needs_unit
    first=1
    for UNIT in "${UNITS[@]}"; do
      ((first)) || echo
      first=0
      do_show
    done
    ;;
  kill)
    needs_unit
    for UNIT in "${UNITS[@]}"; do
      need_root "kill unit $UNIT"
      do_kill || rc=$?
    done
    ;;
  cat)
    needs_unit
    for UNIT in "${UNITS[@]}"; do
      if [[ -f $UNITDIR/$UNIT ]]; then
        echo "# $UNITDIR/$UNIT"
        cat "$UNITDIR/$UNIT"
      else
        err "No files found for $UNIT."
        rc=1
      fi
    done
    ;;
  "") err "systemctl (vpssim): a command is required" && rc=1 ;;
  *) err "systemctl (vpssim): unsupported command $CMD (see the header of runbook/vpssim/assets/systemctl.sh)" && rc=1 ;;
esac
exit "$rc"
