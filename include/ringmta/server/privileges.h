// Least privilege after start-up (as Postfix's single_server.c: privileges go once the
// listeners are open). Started as root, the daemon opens its listeners, admin listener and
// spool as root, hands the spool tree to --user, then becomes that user with no capabilities
// (effective, permitted, inheritable, ambient and bounding sets empty, supplementary groups
// those of the user, PR_SET_NO_NEW_PRIVS). Started as another user holding
// CAP_NET_BIND_SERVICE (systemd's AmbientCapabilities=, setpriv, capsh), it binds and then
// drops every capability the same way (the bounding set stays: changing it needs CAP_SETPCAP).
// Root stays root only with --allow-root.
//
// Invariants: drop() runs before any other thread of the process exists (capabilities, the
// bounding set and no_new_privs are per thread; threads made later inherit the dropped state),
// and verifies the result (setuid(0) must fail afterwards). Start-up only: may allocate and
// throws config::error with what the operator must do.
// Never: runs on a shard, follows a symlink or a multiply-linked file when handing the spool
// over (a hostile spool must not make root chown /etc/shadow).
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "ringmta/config/settings.h"

namespace ringmta::server {

struct privilege_plan {
  enum class action : std::uint8_t {
    switch_user,  // root: hand the spool to uid/gid, then setresuid/setresgid
    drop_caps,    // not root: keep the uid, drop any capability we were given
    keep_root,    // root with --allow-root
  };
  action what = action::drop_caps;
  std::string user;  // for logs and initgroups
  uid_t uid = 0;
  gid_t gid = 0;
};

// Decides from the settings and who we are; throws config::error when root without a usable
// --user and without --allow-root.
privilege_plan plan_privileges(const config::settings& settings);

using privilege_log = std::function<void(std::string_view event, std::string_view detail)>;

// switch_user: lchown every entry of the spool tree that root owns (a previous run as root, or
// directories made just now) to uid:gid. Regular files with more than one link and symlinks
// are left alone and reported through `log`. Throws config::error when the spool root itself
// cannot be handed over.
void hand_spool_over(const privilege_plan& plan, const std::string& spool_dir,
                     const privilege_log& log);

// Carries out the plan, then checks that the spool is still ours to write (its parents must
// be searchable by the user); throws config::error when either fails (the process must not
// run). Returns a line for the start-up log ("uid 65534 (nobody), gid 65534, no capabilities").
std::string drop_privileges(const privilege_plan& plan, const std::string& spool_dir);

}  // namespace ringmta::server
