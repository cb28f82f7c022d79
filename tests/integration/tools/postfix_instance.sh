#!/usr/bin/env bash
# A private Postfix instance for interop tests (tools, delivery): its own config, queue and
# data directories under DIR, smtpd on 127.0.0.1:SMTPD_PORT, relaying everything to
# [127.0.0.1]:RELAY_PORT. EXTRA_MAIN_CF, a file of main.cf lines, overrides these settings
# (e.g. final delivery to virtual mailboxes instead of relaying); EXTRA_MASTER_CF, a file of
# master.cf lines, adds services (e.g. more smtpd listeners with -o overrides, such as one
# with STARTTLS and one without). Never touches the system's
# /etc/postfix or its queue. Needs root (Postfix's master drops privileges to the
# postfix user itself); no chroot.
# usage: postfix_instance.sh start DIR SMTPD_PORT RELAY_PORT [EXTRA_MAIN_CF [EXTRA_MASTER_CF]]
#        postfix_instance.sh stop DIR
set -eu
cmd=$1; W=$2
if [ "$cmd" = stop ]; then postfix -c "$W/etc" stop >/dev/null 2>&1 || true; exit 0; fi
PORT=$3; RELAY=$4; EXTRA=${5:-}; EXTRA_MASTER=${6:-}
mkdir -p "$W/etc" "$W/queue" "$W/data"; chown postfix "$W/data"
cat > "$W/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $W/queue
data_directory = $W/data
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.test
mydomain = pf.test
myorigin = pf.test
mydestination =
relayhost = [127.0.0.1]:$RELAY
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
maillog_file = $W/maillog
maillog_file_prefixes = $W
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
in_flow_delay = 0
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
message_size_limit = 50000000
biff = no
CF
# Overrides are applied in place (a repeated main.cf entry would warn in every log line).
if [ -n "$EXTRA" ]; then
  while IFS= read -r setting; do
    [ -n "$setting" ] && postconf -c "$W/etc" -e "$setting"
  done < "$EXTRA"
fi
cat > "$W/etc/master.cf" <<CF
127.0.0.1:$PORT inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsmgr unix - - n 1000? 1 tlsmgr
postlog unix-dgram n - n - 1 postlogd
tlsmgr unix - - n 1000? 1 tlsmgr
CF
if [ -n "$EXTRA_MASTER" ]; then cat "$EXTRA_MASTER" >> "$W/etc/master.cf"; fi
postfix -c "$W/etc" check || { script -qc "postfix -c $W/etc check" /dev/null; exit 1; }
postfix -c "$W/etc" start >/dev/null 2>&1 || { tail -20 "$W/maillog" >&2; exit 1; }
