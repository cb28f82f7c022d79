"""tools/bootstrap is safe on any host: it never stops, disables or kills a service it did not
just install, never removes a package (another MTA above all) without being told, keeps
packaged daemons from starting while it installs, and does nothing when all is present.

apt-get, dpkg-query, debconf-set-selections and systemctl are replaced by recording shims on
PATH (the real ones would change this machine); the policy-rc.d path points into a temp dir.
usage: test_bootstrap.py tools/bootstrap
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Tap  # noqa: E402

bootstrap = os.path.abspath(sys.argv[1])
tap = Tap()

SHIM = r"""#!/bin/sh
# records every call; behaviour from the test's environment
echo "$(basename "$0") $*" >> "$SHIM_LOG"
case "$(basename "$0")" in
  debconf-set-selections) cat >/dev/null ;;  # reads its input, as the real one does
  dpkg-query)
    for p in $SHIM_INSTALLED; do
      [ "$p" = "$3" ] && { printf 'install ok installed'; exit 0; }
    done
    exit 1 ;;
  apt-get)
    case " $* " in
      *" -s "*) [ -n "$SHIM_REMOVES" ] && echo "Remv $SHIM_REMOVES [4.96-15]"; exit 0 ;;
      *" install "*)
        # a package's postinst asks policy-rc.d before starting its service
        if [ -x "$SHIM_POLICY" ]; then "$SHIM_POLICY" postfix start; echo "policy $?" >> "$SHIM_LOG"
        else echo "policy none" >> "$SHIM_LOG"; fi ;;
    esac
    exit 0 ;;
esac
exit 0
"""


def run(installed, removes="", args=(), extra_env=None):
    work = tempfile.mkdtemp(prefix="bootstrap-test-")
    bin_dir = os.path.join(work, "bin")
    os.mkdir(bin_dir)
    for name in ("dpkg-query", "apt-get", "debconf-set-selections", "systemctl", "pkill",
                 "sudo"):
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(SHIM)
        os.chmod(path, 0o755)
    log = os.path.join(work, "log")
    open(log, "w").close()
    policy = os.path.join(work, "policy-rc.d")
    env = dict(os.environ, PATH=bin_dir + ":" + os.environ["PATH"], SHIM_LOG=log,
               SHIM_INSTALLED=" ".join(installed), SHIM_REMOVES=removes, SHIM_POLICY=policy,
               BOOTSTRAP_POLICY_RC_D=policy)
    env.update(extra_env or {})
    result = subprocess.run(["bash", bootstrap, *args], env=env, capture_output=True, text=True,
                            timeout=60)
    with open(log) as f:
        calls = f.read().splitlines()
    return result, calls, os.path.exists(policy)


def package_list(name):
    """The array `name` of tools/bootstrap, read from the script itself."""
    out = subprocess.run(["bash", "-c", f'source <(sed -n "/^{name}=(/,/^)/p" "$0"); '
                          f'echo "${{{name}[@]}}"', bootstrap],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


run_packages = package_list("run_packages")
test_packages = package_list("test_packages")
tap.ok("libsystemd-dev" in run_packages and "postfix" not in run_packages,
       "running needs libraries, not the test peers", run_packages)
tap.ok("postfix" in test_packages and "nsd" in test_packages, "--test adds the peers")

# Everything present: nothing is installed, nothing is touched.
result, calls, _ = run(run_packages + test_packages, args=["--test"])
tap.ok(result.returncode == 0 and "all" in result.stdout, "all present: exit 0", result.stdout)
tap.ok([c for c in calls if not c.startswith("dpkg-query")] == [],
       "all present: no apt-get, no systemctl, no pkill", calls)

# Build deps present, test peers missing, Postfix would replace exim4: refuse, install nothing.
result, calls, policy_left = run(run_packages, removes="exim4-daemon-light", args=["--test"])
tap.ok(result.returncode != 0 and "exim4-daemon-light" in result.stderr and
       "BOOTSTRAP_SKIP_POSTFIX=1" in result.stderr, "an MTA swap is refused with a way out",
       result.stderr)
tap.ok(not any(" install " in f" {c} " and " -s " not in f" {c} " for c in calls)
       and not any(c.startswith(("systemctl", "pkill")) for c in calls),
       "refused: nothing installed, no service touched", calls)
tap.ok(not policy_left, "refused: no policy-rc.d left behind")

# Skipping Postfix: the swap is gone from the request; installs the rest.
result, calls, _ = run(run_packages, args=["--test"], extra_env={"BOOTSTRAP_SKIP_POSTFIX": "1"})
install = [c for c in calls if c.startswith("apt-get") and " install " in f" {c} " and
           " -s " not in f" {c} "]
tap.ok(result.returncode == 0 and install and " postfix" not in install[0],
       "BOOTSTRAP_SKIP_POSTFIX=1 installs the rest without postfix", calls)

# unbound already installed (the host's resolver), nsd and postfix new: the new daemons are
# kept from starting during the install, disabled at boot; unbound is never touched.
installed = [p for p in run_packages + test_packages if p not in ("nsd", "postfix", "swaks")]
result, calls, policy_left = run(installed, args=["--test"])
tap.ok(result.returncode == 0, "install runs", result.stderr)
tap.ok("policy 101" in calls, "daemons may not start while apt-get installs", calls)
tap.ok(not policy_left, "the temporary policy-rc.d is removed afterwards")
systemctl = [c for c in calls if c.startswith("systemctl")]
tap.ok(sorted(systemctl) == ["systemctl disable nsd", "systemctl disable postfix"],
       "only the daemons installed by this run are disabled (not stopped, not unbound)",
       systemctl)
tap.ok(not any(c.startswith("pkill") for c in calls) and
       not any("--now" in c or " stop " in f" {c} " for c in calls), "nothing is killed or stopped",
       calls)

# Without --test only the build and run dependencies are asked for.
result, calls, _ = run([], args=[])
install = [c for c in calls if c.startswith("apt-get") and " install " in f" {c} " and
           " -s " not in f" {c} "]
tap.ok(result.returncode == 0 and install and "postfix" not in install[0] and
       "libcap-ng-dev" in install[0], "plain bootstrap installs only what running needs", install)
tap.ok("policy none" in calls and not any(c.startswith("systemctl") for c in calls),
       "no daemon package: no policy file, no systemctl", calls)

# An existing policy-rc.d (a container's, an admin's) is never replaced or removed.
with tempfile.NamedTemporaryFile("w", delete=False) as existing:
    existing.write("#!/bin/sh\nexit 0\n")
os.chmod(existing.name, 0o755)
result, calls, _ = run([], args=["--test"], extra_env={"BOOTSTRAP_POLICY_RC_D": existing.name})
with open(existing.name) as f:
    tap.ok(os.path.exists(existing.name) and "exit 0" in f.read(),
           "an existing policy-rc.d is left as it was")
os.unlink(existing.name)
tap.done()
