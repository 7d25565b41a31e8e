//! Which names the server answers to, and the address other devices on the LAN reach it at.

use std::{collections::HashSet, net::SocketAddr};

use demeter_domain::config::Config;

/// The names this server answers to: loopback names, the machine's hostname, the address it
/// listens on (every interface's address when it listens on all), and configured names.
pub(crate) fn allowed_hosts(config: &Config) -> HashSet<String> {
    let mut hosts: HashSet<String> = ["localhost", "127.0.0.1", "::1"].into_iter().map(str::to_owned).collect();
    hosts.extend(config.server.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()));
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            hosts.insert(format!("{name}.local"));
            hosts.insert(name);
        }
    }
    let ip = config.server.listen.ip();
    if ip.is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(ifs) => hosts.extend(ifs.into_iter().map(|i| i.ip().to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces; add this machine's address to server.allowed_hosts")
            }
        }
    } else {
        hosts.insert(ip.to_string());
    }
    hosts
}

/// The status page's address for phones and other PCs: the listen address when it is a LAN
/// address, this machine's first non-loopback IPv4 address when listening on all interfaces,
/// `None` when the server listens on loopback only (LAN access off).
pub fn lan_url(listen: SocketAddr) -> Option<String> {
    let ip = listen.ip();
    if ip.is_loopback() {
        return None;
    }
    let ip = if ip.is_unspecified() {
        let ifs = if_addrs::get_if_addrs().ok()?;
        let mut v4: Vec<_> = ifs.into_iter().filter(|i| !i.is_loopback() && i.ip().is_ipv4()).map(|i| i.ip()).collect();
        v4.sort();
        v4.into_iter().next()?
    } else {
        ip
    };
    Some(format!("http://{}/", SocketAddr::new(ip, listen.port())))
}

/// The address this machine itself uses to reach the server (the desktop window, a browser
/// opened from the tray): loopback when listening on all interfaces.
pub(crate) fn local_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        match listen {
            SocketAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        listen.ip()
    };
    format!("http://{}/", SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_lan_url_and_local_urls_are_reachable() {
        assert_eq!(lan_url("127.0.0.1:7878".parse().unwrap()), None);
        assert_eq!(lan_url("192.168.1.20:80".parse().unwrap()).as_deref(), Some("http://192.168.1.20:80/"));
        assert_eq!(local_url("0.0.0.0:7878".parse().unwrap()), "http://127.0.0.1:7878/");
        assert_eq!(local_url("[::]:7878".parse().unwrap()), "http://[::1]:7878/");
        assert_eq!(local_url("10.0.0.2:7878".parse().unwrap()), "http://10.0.0.2:7878/");
    }
}
