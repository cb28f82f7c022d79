#include "ringmta/server/privileges.h"

#include <cap-ng.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

namespace ringmta::server {
namespace {

[[noreturn]] void refuse(const std::string& why) { throw config::error(why); }

unsigned thread_count() {
  std::error_code ignored;
  unsigned threads = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/task", ignored);
       it != std::filesystem::directory_iterator(); it.increment(ignored))
    ++threads;
  return threads;
}

// The parallel spool readers were joined before the drop, but a joined thread is still listed
// in /proc/self/task for a moment: pthread_join returns when the kernel clears the thread's
// tid (mm_release), before the task is released. Only a thread still listed after a second
// is one that really runs (start-up, main thread only: waiting here blocks no shard).
unsigned threads_after_joined_ones_left() {
  unsigned threads = thread_count();
  for (int waited_ms = 0; threads > 1 && waited_ms < 1000; ++waited_ms) {
    ::usleep(1000);
    threads = thread_count();
  }
  return threads;
}

// Hands one entry (relative to an open directory) to uid:gid when root owns it. Symlinks and
// hard-linked regular files are skipped: their target is not ours to give away.
void hand_entry_over(int directory_fd, const char* name, const std::string& path,
                     const privilege_plan& plan, const privilege_log& log) {
  struct stat st{};
  if (::fstatat(directory_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (st.st_uid == plan.uid) return;  // ours already (a run as the user made it)
  if (S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1) || st.st_uid != 0) {
    log("spool_ownership", fmt::format("{}: left alone (owner {}, {} links{}): chown it to {} "
                                       "if ringmta must write it",
                                       path, st.st_uid, st.st_nlink,
                                       S_ISLNK(st.st_mode) ? ", symlink" : "", plan.user));
    return;
  }
  if (::fchownat(directory_fd, name, plan.uid, plan.gid, AT_SYMLINK_NOFOLLOW) != 0)
    refuse(fmt::format("{}: cannot hand to user {}: {}", path, plan.user, std::strerror(errno)));
}

// Depth-first over real directories only (O_NOFOLLOW: a symlink is never entered).
void hand_tree_over(int directory_fd, const std::string& path, const privilege_plan& plan,
                    const privilege_log& log, unsigned depth) {
  if (depth > 8) return;  // the spool is two levels deep; anything deeper is not ours
  const int copy = ::dup(directory_fd);
  DIR* listing = copy >= 0 ? ::fdopendir(copy) : nullptr;
  if (listing == nullptr) {
    if (copy >= 0) ::close(copy);
    return;
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(listing)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0)
      names.emplace_back(entry->d_name);
  }
  ::closedir(listing);
  for (const auto& name : names) {
    const std::string child = path + "/" + name;
    hand_entry_over(directory_fd, name.c_str(), child, plan, log);
    const int sub = ::openat(directory_fd, name.c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) continue;  // not a directory (or a symlink to one)
    hand_tree_over(sub, child, plan, log, depth + 1);
    ::close(sub);
  }
}

std::string user_name_of(uid_t uid) {
  const passwd* entry = ::getpwuid(uid);
  return entry != nullptr ? entry->pw_name : std::to_string(uid);
}

void set_no_new_privs() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    refuse(fmt::format("PR_SET_NO_NEW_PRIVS: {}", std::strerror(errno)));
}

// Effective, permitted, inheritable and ambient sets emptied (the bounding set needs
// CAP_SETPCAP: capng_change_id clears it while we are still root).
void clear_capabilities() {
  capng_clear(CAPNG_SELECT_ALL);
  const auto sets = static_cast<capng_select_t>(CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT);
  if (capng_apply(sets) != 0) refuse("cannot drop capabilities (capng_apply failed)");
  if (capng_get_caps_process() != 0 || capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE)
    refuse("capabilities are still held after dropping them");
}

std::string drop(const privilege_plan& plan) {
  if (const unsigned threads = threads_after_joined_ones_left(); threads > 1)
    refuse(fmt::format("internal: privileges must be dropped before threads start ({} run)",
                       threads));
  if (plan.what == privilege_plan::action::switch_user) {
    capng_clear(CAPNG_SELECT_ALL);
    // Sets gid and supplementary groups (initgroups: a key readable by group ssl-cert stays
    // readable), then the uid; clears the bounding set while CAP_SETPCAP is still ours.
    const auto flags = static_cast<capng_flags_t>(CAPNG_INIT_SUPP_GRP | CAPNG_CLEAR_BOUNDING);
    if (capng_change_id(static_cast<int>(plan.uid), static_cast<int>(plan.gid), flags) != 0)
      refuse(fmt::format("cannot switch to user {} (uid {}, gid {})", plan.user, plan.uid,
                         plan.gid));
    clear_capabilities();
    set_no_new_privs();
    // Paranoia as OpenSSH's permanently_set_uid: getting root back must be impossible.
    uid_t real = 0, effective = 0, saved = 0;
    ::getresuid(&real, &effective, &saved);
    if (real != plan.uid || effective != plan.uid || saved != plan.uid || ::setuid(0) == 0 ||
        ::setgid(0) == 0)
      refuse(fmt::format("switching to user {} left a way back to root", plan.user));
    return fmt::format("uid {} ({}), gid {}, no capabilities", plan.uid, plan.user, plan.gid);
  }
  clear_capabilities();
  set_no_new_privs();
  return fmt::format("uid {} ({}), started unprivileged: capabilities dropped", plan.uid,
                     plan.user);
}

}  // namespace

privilege_plan plan_privileges(const config::settings& settings) {
  privilege_plan plan;
  plan.uid = ::geteuid();
  plan.gid = ::getegid();
  if (plan.uid != 0) {
    plan.what = privilege_plan::action::drop_caps;
    plan.user = user_name_of(plan.uid);
    return plan;
  }
  if (settings.allow_root) {
    plan.what = privilege_plan::action::keep_root;
    plan.user = "root";
    return plan;
  }
  const passwd* entry = ::getpwnam(settings.user.c_str());
  if (entry == nullptr)
    refuse(fmt::format("--user {}: no such user. Create it (the install step does: "
                       "systemd-sysusers, or useradd --system --home-dir /var/spool/ringmta "
                       "--shell /usr/sbin/nologin {}), name another with --user, or run as "
                       "root with --allow-root",
                       settings.user, settings.user));
  if (entry->pw_uid == 0)
    refuse(fmt::format("--user {} is root: name an unprivileged user, or give --allow-root",
                       settings.user));
  plan.what = privilege_plan::action::switch_user;
  plan.user = entry->pw_name;
  plan.uid = entry->pw_uid;
  plan.gid = entry->pw_gid;
  return plan;
}

void hand_spool_over(const privilege_plan& plan, const std::string& spool_dir,
                     const privilege_log& log) {
  if (plan.what != privilege_plan::action::switch_user) return;
  const int root = ::open(spool_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (root < 0)
    refuse(fmt::format("{}: cannot open the spool: {}", spool_dir, std::strerror(errno)));
  struct stat st{};
  if (::fstat(root, &st) == 0 && (st.st_uid != plan.uid || st.st_gid != plan.gid) &&
      ::fchown(root, plan.uid, plan.gid) != 0) {
    const int error = errno;
    ::close(root);
    refuse(fmt::format("{}: cannot hand the spool to user {}: {}", spool_dir, plan.user,
                       std::strerror(error)));
  }
  hand_tree_over(root, spool_dir, plan, log, 0);
  ::close(root);
}

std::string drop_privileges(const privilege_plan& plan, const std::string& spool_dir) {
  if (plan.what == privilege_plan::action::keep_root)
    return "root (--allow-root): privileges kept; start as root without it to run as --user";
  std::string description = drop(plan);
  // New segments and journal snapshots are created by path later, as this user.
  if (::access(spool_dir.c_str(), R_OK | W_OK | X_OK) != 0)
    refuse(fmt::format("{}: the spool is not writable by user {} ({}): its parent directories "
                       "must be searchable by it (chmod o+x), and the spool its own",
                       spool_dir, plan.user, std::strerror(errno)));
  return description;
}

}  // namespace ringmta::server
