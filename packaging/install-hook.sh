#!/bin/sh
# Run by `meson install` (meson.add_install_script) after the files are in place.
#   install-hook.sh BUILDTYPE SBIN_RINGMTA BIN_BLAST BIN_SINK SYSUSERS_FILE TMPFILES_FILE
# 1. A release build's binaries are stripped (debug symbols only: assertions stay in).
# 2. A real install (no DESTDIR) as root creates the user 'ringmta' and /var/spool/ringmta
#    (systemd-sysusers and systemd-tmpfiles, or useradd and install -d without systemd).
#    Under DESTDIR (a package being built) nothing outside DESTDIR is touched: the package's
#    own scripts (or systemd at boot) apply the sysusers.d and tmpfiles.d entries.
set -eu
buildtype=$1; shift
ringmta=$1 blast=$2 sink=$3 sysusers=$4 tmpfiles=$5
root=${DESTDIR:-}

if [ "$buildtype" = release ]; then
  for binary in "$ringmta" "$blast" "$sink"; do
    if [ -f "$root$binary" ]; then
      strip --strip-unneeded "$root$binary"
      echo "install-hook: stripped $binary"
    fi
  done
fi

if [ -n "$root" ]; then
  echo "install-hook: DESTDIR install: user 'ringmta' and /var/spool/ringmta not created" \
       "(apply $sysusers and $tmpfiles on the target)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-hook: not root: create the user and the spool as root:" \
       "systemd-sysusers $sysusers && systemd-tmpfiles --create $tmpfiles"
  exit 0
fi
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers "$sysusers"
elif ! getent passwd ringmta >/dev/null; then
  useradd --system --user-group --home-dir /var/spool/ringmta --no-create-home \
    --shell /usr/sbin/nologin --comment "ringmta mail transfer agent" ringmta
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create "$tmpfiles"
else
  install -d -m 0750 -o ringmta -g ringmta /var/spool/ringmta
fi
echo "install-hook: user 'ringmta' and /var/spool/ringmta are ready"
