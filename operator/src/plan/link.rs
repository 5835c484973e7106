//! Link attributes shared by every device the planner builds: MTU, MAC, marker, bridge port
//! and IPv4 addresses, in the host's or a container's namespace.
//!
//! Addresses: on its own devices gremesh manages only the addresses inside the mesh network.
//! Those are its own — the current one, or an old one left by a subnet or address change —
//! and any not in the spec is removed. An address outside the mesh network (one an
//! administrator added by hand, say `192.168.77.1/24` on the bridge) is left alone.
//!
//! Caveat: for the same reason an address of an earlier `spec.network` that does not overlap
//! the new one is not removed when the network changes; gremesh cannot tell it from one added
//! by hand. Remove it with `ip addr del`, or take the mesh off the host and apply it again.

use ipnet::Ipv4Net;

use crate::addressing::{IfName, Mac, Marker};
use crate::observe::Link;

use super::{Action, Namespace, Planner};

impl Planner<'_> {
    /// Sets whichever of MTU, MAC, marker and bridge port differ on a link, or only brings
    /// it up when nothing else differs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_link(
        &mut self,
        ns: Namespace,
        existing: Option<&Link>,
        name: &IfName,
        mtu: u32,
        mac: Option<Mac>,
        marker: &Marker,
        master: Option<&IfName>,
        object: &str,
    ) {
        let want_mac = mac.map(|m| m.to_string());
        let action = Action::SetLink {
            name: name.clone(),
            mtu: (existing.map(|l| l.mtu) != Some(mtu)).then_some(mtu),
            mac: mac.filter(|_| existing.and_then(|l| l.mac.clone()) != want_mac),
            marker: (existing.and_then(|l| l.marker()).as_ref() != Some(marker))
                .then(|| marker.clone()),
            master: master
                .filter(|b| existing.and_then(|l| l.master.as_deref()) != Some(b.as_str()))
                .cloned(),
        };
        if let Action::SetLink {
            mtu: None,
            mac: None,
            marker: None,
            master: None,
            ..
        } = action
        {
            if !existing.is_some_and(|l| l.up) {
                self.push(ns, Action::Up { name: name.clone() }, object);
            }
        } else {
            self.push(ns, action, object);
        }
    }

    /// Removes the addresses inside the mesh network (`managed`) that a link has but should
    /// not, then adds the missing ones. Addresses outside `managed` are not gremesh's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn addresses(
        &mut self,
        ns: Namespace,
        existing: Option<&Link>,
        dev: &IfName,
        want: &[Ipv4Net],
        managed: Ipv4Net,
        object: &str,
    ) {
        let have: &[Ipv4Net] = existing.map(|l| l.addrs.as_slice()).unwrap_or(&[]);
        let stale = |a: &&Ipv4Net| !want.contains(a) && managed.contains(&a.addr());
        for address in have.iter().filter(stale) {
            self.push(
                ns.clone(),
                Action::DelAddress {
                    dev: dev.clone(),
                    address: *address,
                },
                object,
            );
        }
        for address in want.iter().filter(|a| !have.contains(a)) {
            self.push(
                ns.clone(),
                Action::AddAddress {
                    dev: dev.clone(),
                    address: *address,
                },
                object,
            );
        }
        // An address that stays keeps its connected route only if nobody deleted it: the
        // kernel makes that route when the address is added (or the link comes up), not later.
        let Some(link) = existing.filter(|l| l.up) else {
            return;
        };
        let routes = match &ns {
            Namespace::Host => Some(&self.state.routes),
            Namespace::Container { id, .. } => self.state.container_routes.get(id.as_str()),
        };
        let Some(routes) = routes else {
            return;
        };
        for address in want
            .iter()
            .filter(|a| have.contains(a) && a.prefix_len() < 32)
        {
            let connected = routes.iter().any(|r| {
                r.dev.as_deref() == Some(link.name.as_str())
                    && r.gateway.is_none()
                    && r.destination() == Some(address.trunc())
            });
            if !connected {
                self.push(
                    ns.clone(),
                    Action::AddConnectedRoute {
                        dev: dev.clone(),
                        address: *address,
                    },
                    object,
                );
            }
        }
    }
}
