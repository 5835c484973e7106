//! Parsing the probe's output into a [`HostState`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Container, DockerNetworkState, FdbEntry, GreInfo, HostState, Link, RouteEntry, VxlanInfo,
};

/// The probe's output could not be understood.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeError {
    /// A section the probe always prints is missing (the script was cut short).
    #[error("probe output is incomplete: no {0} section")]
    MissingSection(&'static str),
    /// A section is not the JSON `ip`/`bridge` print.
    #[error("probe section {section}: {reason}")]
    BadSection {
        /// Section name.
        section: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    operstate: Option<String>,
    #[serde(default)]
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<Value>,
    #[serde(default)]
    info_slave_data: Option<Value>,
}

#[derive(Deserialize)]
struct RawAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct RawFdb {
    mac: String,
    #[serde(default)]
    dst: Option<String>,
}

/// Parses the whole probe output.
pub fn parse_probe(output: &str) -> Result<HostState, ProbeError> {
    let sections = split_sections(output);
    let get = |name: &'static str| {
        sections
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, body)| body.as_str())
            .ok_or(ProbeError::MissingSection(name))
    };
    get("end")?;
    let mut state = HostState {
        links: parse_links("links", get("links")?)?,
        routes: parse_routes("host-routes", get("host-routes")?)?,
        ..HostState::default()
    };
    state.capabilities.gretap = get("gretap")?.trim() == "yes";
    state.capabilities.vxlan = get("vxlan")?.trim() == "yes";
    let docker = get("docker")?.trim();
    state.capabilities.docker_version = (!docker.is_empty()).then(|| docker.to_owned());
    state.containers = parse_containers(get("containers")?);
    state.docker_networks = parse_networks(get("docker-networks")?)?;
    state.docker_network_names = get("docker-network-names")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut ids_netns = Vec::new();
    for (header, body) in &sections {
        if let Some(dev) = header.strip_prefix("fdb ") {
            state.fdb.insert(dev.to_owned(), parse_fdb(header, body)?);
        } else if let Some(rest) = header.strip_prefix("health ") {
            if let Some((gw, result)) = rest.split_once(' ') {
                if let Ok(gw) = gw.parse() {
                    state.health.insert(gw, result == "ok");
                }
            }
        } else if let Some(id) = header.strip_prefix("routes ") {
            state
                .container_routes
                .insert(id.to_owned(), parse_routes(header, body)?);
        } else if let Some(netns) = header.strip_prefix("host-netns ") {
            state.netns = Some(netns.trim().to_owned());
        } else if let Some(rest) = header.strip_prefix("netns-id ") {
            if let Some((id, netns)) = rest.split_once(' ') {
                ids_netns.push((id.to_owned(), netns.trim().to_owned()));
            }
        } else if let Some(id) = header.strip_prefix("netns ") {
            state
                .container_links
                .insert(id.to_owned(), parse_links(header, body)?);
        }
    }
    for (id, netns) in ids_netns {
        if let Some(c) = state.containers.iter_mut().find(|c| c.id == id) {
            c.netns = (!netns.is_empty()).then_some(netns);
        }
    }
    Ok(state)
}

fn split_sections(output: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in output.lines() {
        if let Some(header) = line.strip_prefix("@@") {
            sections.push((header.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    sections
}

fn bad(section: &str, reason: impl ToString) -> ProbeError {
    ProbeError::BadSection {
        section: section.to_owned(),
        reason: reason.to_string(),
    }
}

fn parse_links(section: &str, body: &str) -> Result<Vec<Link>, ProbeError> {
    let raw: Vec<RawLink> = serde_json::from_str(body.trim()).map_err(|e| bad(section, e))?;
    Ok(raw.into_iter().map(link_from_raw).collect())
}

fn link_from_raw(raw: RawLink) -> Link {
    let info = raw.linkinfo.as_ref();
    let kind = info.and_then(|i| i.info_kind.clone());
    let data = info.and_then(|i| i.info_data.as_ref());
    let slave = info.and_then(|i| i.info_slave_data.as_ref());
    let addrs = raw
        .addr_info
        .iter()
        .filter(|a| a.family == "inet")
        .filter_map(|a| Ipv4Net::new(a.local.parse().ok()?, a.prefixlen).ok())
        .collect();
    let vxlan = (kind.as_deref() == Some("vxlan")).then(|| VxlanInfo {
        id: data
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        local: data.and_then(|d| ip_field(d, "local")),
        port: data
            .and_then(|d| d.get("port"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u16,
    });
    let gre = (kind.as_deref() == Some("gretap")).then(|| GreInfo {
        local: data.and_then(|d| ip_field(d, "local")),
        remote: data.and_then(|d| ip_field(d, "remote")),
        ikey: data.and_then(|d| key_field(d, "ikey")),
        okey: data.and_then(|d| key_field(d, "okey")),
    });
    let up = raw.flags.iter().any(|f| f == "UP");
    let oper = raw.operstate.as_deref().unwrap_or("UNKNOWN");
    Link {
        name: raw.ifname,
        stp: (kind.as_deref() == Some("bridge")).then(|| {
            data.and_then(|d| d.get("stp_state"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
                != 0
        }),
        kind,
        mtu: raw.mtu,
        mac: raw.address.map(|m| m.to_ascii_lowercase()),
        alias: raw.ifalias,
        master: raw.master,
        oper_up: up && (oper == "UP" || oper == "UNKNOWN"),
        up,
        addrs,
        isolated: slave
            .and_then(|s| s.get("isolated"))
            .and_then(Value::as_bool),
        vxlan,
        gre,
    }
}

fn ip_field(data: &Value, key: &str) -> Option<Ipv4Addr> {
    data.get(key)?.as_str()?.parse().ok()
}

/// GRE keys are printed either as a number or in dotted-quad form, depending on the iproute2
/// version.
fn key_field(data: &Value, key: &str) -> Option<u32> {
    match data.get(key)? {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::String(s) => s
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .ok()
            .or_else(|| s.parse().ok()),
        _ => None,
    }
}

fn parse_fdb(section: &str, body: &str) -> Result<Vec<FdbEntry>, ProbeError> {
    let raw: Vec<RawFdb> = serde_json::from_str(body.trim()).map_err(|e| bad(section, e))?;
    Ok(raw
        .into_iter()
        .map(|e| FdbEntry {
            mac: e.mac.to_ascii_lowercase(),
            dst: e.dst.and_then(|d| d.parse().ok()),
        })
        .collect())
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

fn parse_routes(section: &str, body: &str) -> Result<Vec<RouteEntry>, ProbeError> {
    let raw: Vec<RawRoute> = serde_json::from_str(body.trim()).map_err(|e| bad(section, e))?;
    Ok(raw
        .into_iter()
        .map(|r| RouteEntry {
            dst: r.dst,
            gateway: r.gateway.and_then(|g| g.parse().ok()),
            dev: r.dev,
            protocol: r.protocol,
        })
        .collect())
}

fn parse_networks(body: &str) -> Result<Vec<DockerNetworkState>, ProbeError> {
    let raw: Vec<Value> =
        serde_json::from_str(body.trim()).map_err(|e| bad("docker-networks", e))?;
    Ok(raw
        .iter()
        .map(|n| {
            let ipam = n.pointer("/IPAM/Config/0");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let opt = |key: &str| text(n.get("Options").and_then(|o| o.get(key)));
            DockerNetworkState {
                name: text(n.get("Name")).unwrap_or_default(),
                mesh: text(n.pointer("/Labels/gremesh.io~1mesh")).unwrap_or_default(),
                subnet: text(ipam.and_then(|c| c.get("Subnet"))).and_then(|s| s.parse().ok()),
                ip_range: text(ipam.and_then(|c| c.get("IPRange"))).and_then(|s| s.parse().ok()),
                gateway: text(ipam.and_then(|c| c.get("Gateway"))).and_then(|s| s.parse().ok()),
                bridge: opt("com.docker.network.bridge.name"),
                mtu: opt("com.docker.network.driver.mtu").and_then(|m| m.parse().ok()),
                containers: n
                    .get("Containers")
                    .and_then(Value::as_object)
                    .map_or(0, |c| c.len()),
            }
        })
        .collect())
}

fn parse_containers(body: &str) -> Vec<Container> {
    body.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let id = f.next()?.to_owned();
            let name = f.next()?.trim_start_matches('/').to_owned();
            let running = f.next()? == "true";
            let pid = f.next()?.parse().ok()?;
            Some(Container {
                id,
                name,
                running,
                pid,
                network_mode: f.next().unwrap_or_default().to_owned(),
                netns: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"@@links
[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"operstate":"UNKNOWN","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
 {"ifindex":2,"ifname":"eth0","flags":["UP","LOWER_UP"],"mtu":1500,"operstate":"UP","address":"AA:bb:cc:00:00:01","addr_info":[{"family":"inet","local":"10.200.0.11","prefixlen":24},{"family":"inet6","local":"fe80::1","prefixlen":64}]},
 {"ifindex":3,"ifname":"gx-1","flags":["UP"],"mtu":1450,"operstate":"UNKNOWN","master":"gm-1","ifalias":"gremesh:m1:vxlan","linkinfo":{"info_kind":"vxlan","info_data":{"id":42,"local":"10.200.0.11","port":4789},"info_slave_kind":"bridge","info_slave_data":{"isolated":true}}},
 {"ifindex":4,"ifname":"gt-1","flags":[],"mtu":1458,"operstate":"DOWN","linkinfo":{"info_kind":"gretap","info_data":{"local":"10.0.0.1","remote":"10.0.0.2","ikey":"0.0.0.7","okey":7}}}]
@@host-routes
[{"dst":"default","gateway":"10.200.0.1","dev":"eth0","flags":[]},{"dst":"10.200.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.200.0.11","flags":[]},{"type":"unreachable","dst":"10.99.0.0/16","flags":[]}]
@@host-netns net:[4026532175]
@@gretap
no
@@vxlan
yes
@@fdb gx-1
[{"mac":"00:00:00:00:00:00","dst":"10.200.0.12","flags":["self"],"state":"permanent"}]
@@docker
20.10.24
@@docker-networks
[{"Name":"m1net","IPAM":{"Config":[{"Subnet":"10.10.0.0/16","IPRange":"10.10.1.128/25","Gateway":"10.10.1.1"}]},"Options":{"com.docker.network.bridge.name":"gm-1","com.docker.network.driver.mtu":"1450"},"Labels":{"gremesh.io/mesh":"m1"},"Containers":{"x":{}}}]
@@docker-network-names
none
m1net
@@containers
abc123 /web-a true 4242 none
def456 /web-b false 0 bridge
0ff1ce /hn true 4343 host
c0ffee /cn true 4444 container:abc123
@@netns-id abc123 net:[4026532383]
@@netns abc123
[{"ifindex":1,"ifname":"lo","flags":["UP"],"mtu":65536,"operstate":"UNKNOWN"}]
@@routes abc123
[{"dst":"default","gateway":"172.17.0.1","dev":"eth0"},{"dst":"10.10.0.0/16","dev":"eth1","protocol":"kernel","scope":"link","prefsrc":"10.10.1.10"}]
@@netns-id 0ff1ce net:[4026532175]
@@netns 0ff1ce
[]
@@routes 0ff1ce
[]
@@end
"#;

    #[test]
    fn parses_every_section() {
        let s = parse_probe(SAMPLE).unwrap();
        assert_eq!(s.links.len(), 4);
        assert_eq!(s.underlay_mtu("10.200.0.11".parse().unwrap()), Some(1500));
        let vx = s.link("gx-1").unwrap();
        assert_eq!(
            vx.vxlan,
            Some(VxlanInfo {
                id: 42,
                local: Some("10.200.0.11".parse().unwrap()),
                port: 4789
            })
        );
        assert_eq!(vx.isolated, Some(true));
        assert!(vx.marker().is_some());
        let gt = s.link("gt-1").unwrap();
        assert_eq!(gt.gre.as_ref().unwrap().ikey, Some(7));
        assert_eq!(gt.gre.as_ref().unwrap().okey, Some(7));
        assert!(!gt.up);
        assert_eq!(
            s.link("eth0").unwrap().mac.as_deref(),
            Some("aa:bb:cc:00:00:01")
        );
        assert!(!s.capabilities.gretap);
        assert!(s.capabilities.vxlan);
        assert_eq!(s.capabilities.docker_version.as_deref(), Some("20.10.24"));
        assert_eq!(s.fdb["gx-1"][0].dst, Some("10.200.0.12".parse().unwrap()));
        assert_eq!(s.container("web-a").unwrap().pid, 4242);
        assert!(!s.container("web-b").unwrap().running);
        assert_eq!(s.container_links["abc123"].len(), 1);
        let net = &s.docker_networks[0];
        assert_eq!(
            (net.mesh.as_str(), net.mtu, net.containers),
            ("m1", Some(1450), 1)
        );
        assert_eq!(net.ip_range, Some("10.10.1.128/25".parse().unwrap()));
        assert_eq!(s.docker_network_names, ["none", "m1net"]);
        assert_eq!(
            s.container_routes["abc123"][0].gateway,
            Some("172.17.0.1".parse().unwrap())
        );
    }

    #[test]
    fn host_routes_and_namespaces_are_read() {
        let s = parse_probe(SAMPLE).unwrap();
        let dsts: Vec<_> = s.routes.iter().map(|r| r.destination()).collect();
        assert_eq!(
            dsts,
            [
                Some(Ipv4Net::default()),
                Some("10.200.0.0/24".parse().unwrap()),
                Some("10.99.0.0/16".parse().unwrap())
            ]
        );
        assert!(s.routes[1].is_connected_of(s.link("eth0").unwrap()));
        assert!(!s.routes[0].is_connected_of(s.link("eth0").unwrap()));
        assert_eq!(s.netns.as_deref(), Some("net:[4026532175]"));
        let web_a = s.container("web-a").unwrap();
        assert_eq!(web_a.network_mode, "none");
        assert_eq!(web_a.netns.as_deref(), Some("net:[4026532383]"));
        assert_eq!(s.shared_namespace(web_a), None);
        let hn = s.container("hn").unwrap();
        assert_eq!(
            s.shared_namespace(hn),
            Some(super::super::SharedNamespace::Host)
        );
        let cn = s.container("cn").unwrap();
        assert_eq!(
            s.shared_namespace(cn),
            Some(super::super::SharedNamespace::Container("web-a".into()))
        );
        // Same namespace as the host, whatever Docker says the mode is.
        let mut sneaky = hn.clone();
        sneaky.network_mode = "bridge".into();
        assert_eq!(
            s.shared_namespace(&sneaky),
            Some(super::super::SharedNamespace::Host)
        );
    }

    #[test]
    fn truncated_output_is_an_error() {
        let cut = &SAMPLE[..SAMPLE.find("@@docker").unwrap()];
        assert_eq!(parse_probe(cut), Err(ProbeError::MissingSection("end")));
    }
}
