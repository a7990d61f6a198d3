//! What a process's cgroup path says: the path itself (`/proc/PID/cgroup`,
//! cgroups(7)) and the container or unit it names. Pure parsers.

/// The unified (v2) cgroup path, or the first v1 hierarchy's.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut first = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" {
            return Some(path.to_string());
        }
        first.get_or_insert_with(|| path.to_string());
    }
    first
}

/// Recognises container runtimes and systemd units in a cgroup path:
/// `docker:0123456789ab`, `containerd:...`, `cri-o:...`, `podman:...`,
/// `kubepods:...`, `systemd:nginx.service`.
pub fn container_id(path: &str) -> Option<String> {
    let leaf = path.rsplit('/').find(|s| !s.is_empty())?;
    let short = |id: &str| id.get(..12).unwrap_or(id).to_string();
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = leaf
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
            && is_id(id)
        {
            return Some(format!("{runtime}:{}", short(id)));
        }
    }
    if is_id(leaf) {
        let runtime = if path.contains("kubepods") {
            "kubepods"
        } else if path.contains("docker") {
            "docker"
        } else {
            "container"
        };
        return Some(format!("{runtime}:{}", short(leaf)));
    }
    if leaf.ends_with(".service") || leaf.ends_with(".scope") {
        return Some(format!("systemd:{leaf}"));
    }
    // A cgroup a unit made below its own (systemd.resource-control(5),
    // Delegate=): the innermost unit above it.
    path.rsplit('/')
        .find(|c| c.ends_with(".service"))
        .map(|unit| format!("systemd:{unit}"))
}

/// The Kubernetes pod UID in a kubelet cgroup path: the systemd driver's
/// `kubepods-burstable-pod<UID>.slice` (dashes of the UID written as
/// `_`) or the cgroupfs driver's `/kubepods/burstable/pod<UID>/...`.
pub fn pod_uid(path: &str) -> Option<String> {
    if !path.contains("kubepods") {
        return None;
    }
    path.split('/').find_map(|seg| {
        let seg = seg.strip_suffix(".slice").unwrap_or(seg);
        let uid = seg
            .rsplit_once("-pod")
            .map(|(_, u)| u)
            .or_else(|| seg.strip_prefix("pod"))?;
        let uid = uid.replace('_', "-");
        let ok = uid.len() == 36
            && uid.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        ok.then_some(uid)
    })
}
