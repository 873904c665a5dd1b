//! Which TCP port a child process listens on, read from Linux's `/proc`.
//!
//! The emulator is started with `-port 0`, so the kernel picks its port when it binds
//! and no other process can take it in between; its log then says `:0`, so the port is
//! read back from the child itself: the socket inodes among `/proc/<pid>/fd`, looked up
//! in `/proc/<pid>/net/tcp` (and `tcp6`) for a socket in the LISTEN state.
//!
//! Linux only (Panini's tests, CI and benchmarks run on Debian). This module knows
//! `/proc`'s text formats and nothing of HTTP or the emulator.

use std::collections::HashSet;
use std::io;
use std::path::Path;

/// `st` of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The TCP ports that process `pid` listens on (any address), in table order; empty
/// while it has not called `listen` yet.
pub(crate) fn listening_ports(pid: u32) -> io::Result<Vec<u16>> {
    let proc = Path::new("/proc").join(pid.to_string());
    let inodes = socket_inodes(&proc.join("fd"))?;
    let mut ports = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        match std::fs::read_to_string(proc.join(table)) {
            Ok(text) => ports.extend(listening_in_table(&text, &inodes)),
            // No IPv6 in this kernel: no tcp6 table.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table == "net/tcp6" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ports)
}

/// The inodes of the sockets among a process's open descriptors (`socket:[INODE]`).
fn socket_inodes(fd_dir: &Path) -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(fd_dir)? {
        // A descriptor closed while listing is gone, not an error.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
        {
            inodes.insert(inode);
        }
    }
    Ok(inodes)
}

/// The local ports of the LISTEN rows of a `/proc/net/tcp{,6}` table whose inode is
/// one of `inodes`.
fn listening_in_table(table: &str, inodes: &HashSet<u64>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != TCP_LISTEN || !inodes.contains(&inode.parse().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:B231 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 586400 2 0000000062c1b95f 100 0 0 10 0
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 559 1 000000001671ea76 100 0 0 10 0
   2: 0100007F:8156 0100007F:8211 01 00000000:00000000 03:00001456 00000000     0        0 586401 3 00000000541c6acc
";

    #[test]
    fn only_listening_rows_of_the_process_count() {
        // 586400 listens on 127.0.0.1:45617; 559 listens but belongs to another
        // process; 586401 is the process's but an established connection.
        let inodes = HashSet::from([586400, 586401]);
        assert_eq!(listening_in_table(TABLE, &inodes), [45617]);
        assert!(listening_in_table(TABLE, &HashSet::new()).is_empty());
    }

    #[test]
    fn finds_a_listener_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ports = listening_ports(std::process::id()).unwrap();
        assert!(ports.contains(&port), "{port} not in {ports:?}");
    }
}
