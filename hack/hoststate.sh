#!/usr/bin/env bash
# The parts of the host's state that a real node (hack/node.sh) could change, as sorted text
# lines, so that a snapshot taken before `node.sh up` and one taken after `node.sh down` can be
# compared with diff.
#
#   hack/hoststate.sh snapshot FILE    write the snapshot to FILE
#   hack/hoststate.sh compare A B      exit 0 when A and B are equal, else print the diff
#
# Recorded: every sysctl (`sysctl -a`, except counters that move by themselves), the iptables
# and ip6tables tables and chains (nf_tables and legacy back ends), network interfaces,
# addresses and routes, network namespaces, mounts, the top-level cgroups of each hierarchy,
# and the files under the paths containerd, kubelet and the CNI plugins use outside .serin/.
set -euo pipefail

# Counters and random values the kernel changes on its own.
VOLATILE='^(kernel\.random\.|kernel\.ns_last_pid|kernel\.pty\.nr|fs\.dentry-state|fs\.inode-(nr|state)|fs\.file-nr|fs\.aio-nr|fs\.quota\.|net\.netfilter\.nf_conntrack_count|kernel\.sched_domain\.|fs\.binfmt_misc\.|kernel\.tainted|vm\.stat_refresh|dev\.cdrom\.info)'
# Paths outside the checkout that containerd, kubelet or the CNI plugins write to.
PATHS=(/run/containerd /var/run/containerd /var/lib/containerd /var/lib/kubelet /var/log/containers
  /var/log/pods /var/lib/cni /etc/cni /opt/cni /run/netns /var/run/netns /run/runc
  /etc/kubernetes /var/lib/dockershim /run/flannel)

snapshot() {
  {
    sysctl -a 2>/dev/null | grep -Ev "$VOLATILE" | sed 's/^/sysctl /'
    local save
    for save in iptables-save ip6tables-save iptables-legacy-save ip6tables-legacy-save \
      iptables-nft-save ip6tables-nft-save; do
      command -v "$save" >/dev/null 2>&1 || continue
      # Table and chain names (counters stripped), and the rules themselves.
      "$save" 2>/dev/null | grep -E '^[*:-]' | sed -E 's/ \[[0-9]+:[0-9]+\]$//; s/^/'"$save"' /' || true
    done
    command -v nft >/dev/null 2>&1 && nft list tables 2>/dev/null | sed 's/^/nft /'
    ip -o link show | sed -E 's/^[0-9]+: //; s/^/link /'
    ip -o addr show | sed -E 's/^[0-9]+: //; s/ +valid_lft.*//; s/^/addr /'
    ip route show table all | sed 's/^/route /'
    ip netns list 2>/dev/null | sed 's/^/netns /'
    findmnt -rn -o TARGET,SOURCE,FSTYPE | sed 's/^/mount /'
    local h
    for h in /sys/fs/cgroup/*/; do
      find "$h" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sed 's/^/cgroup /'
    done
    [ -f /sys/fs/cgroup/cgroup.controllers ] &&
      find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d | sed 's/^/cgroup /'
    local p
    for p in "${PATHS[@]}"; do
      [ -e "$p" ] && find "$p" 2>/dev/null | sed 's/^/file /'
    done
    true
  } | LC_ALL=C sort
}

case ${1:-} in
  snapshot) [ -n "${2:-}" ] || { echo "usage: $0 snapshot FILE" >&2; exit 2; }
    snapshot >"$2" ;;
  compare) [ -n "${3:-}" ] || { echo "usage: $0 compare A B" >&2; exit 2; }
    diff -u "$2" "$3" ;;
  *) echo "usage: $0 snapshot FILE | compare A B" >&2; exit 2 ;;
esac
