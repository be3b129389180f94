#!/bin/bash
# PID 1 of a vpssim host, run by
#   ip netns exec unibus-NAME unshare --mount --uts --pid --fork --kill-child \
#       --mount-proc --propagation private bash hostinit.sh HOSTDIR BINDIR
# It gives the host its own hostname and filesystem view, then becomes the
# host's sshd. Killing that sshd (PID 1 here) kills the whole host.
set -euo pipefail
exec 3>&- # the machine lock: our parent (unshare) keeps it for the host's lifetime
H=$1   # Dir/hosts/NAME
BIN=$2 # Dir/bin
name=$(<"$H/etc/hostname")
hostname "$name"

# /etc: an overlay on the machine's /etc, the host's own files in the upper
# layer (hosts, hostname, ssh/, sudoers.d/, systemd/system/). useradd, units
# and sudoers written on this host stay on this host. Retried: right after a
# crash the previous boot's overlay may still hold the upper dir for a moment.
etc_ok=
for _ in $(seq 50); do
  if mount -t overlay vpssim-etc -o "lowerdir=/etc,upperdir=$H/etc,workdir=$H/etc.work" /etc 2>/dev/null; then
    etc_ok=1
    break
  fi
  sleep 0.05
done
if [[ -z $etc_ok ]]; then
  echo "vpssim: overlay on /etc failed; binding the per-host files instead" >&2
  for f in hosts hostname ssh sudoers.d systemd/system; do
    mount --bind "$H/etc/$f" "/etc/$f"
  done
fi

mount --bind "$H/opt" /opt
mount --bind "$H/home" /home
mount --bind "$H/root" /root
mount --bind "$H/log" /var/log
if [[ -e /usr/bin/systemctl ]]; then
  mount --bind "$BIN/systemctl" /usr/bin/systemctl
else # no systemd on this machine: stack the fake over /usr/bin (read-only)
  mount -t overlay vpssim-usrbin -o "lowerdir=$BIN/usrbin:/usr/bin" /usr/bin
fi

mount --bind "$H/tmp" /tmp
# /run is empty at every boot, like the tmpfs it is on a real host. It is
# mounted last: the state dir usually lives under the machine's /run.
find "$H/run" -mindepth 1 -delete
install -d -m 0755 "$H/run/sshd"
install -d -m 1777 "$H/run/lock"
mount --bind "$H/run" /run
cd /

# Units enabled with systemctl start at boot, once sshd (this PID) runs.
(sleep 0.3; exec /usr/bin/systemctl __boot) </dev/null >>/var/log/vpssim-boot.log 2>&1 &

exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
