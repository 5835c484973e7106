//! Link attributes shared by every device the planner builds: MTU, MAC, marker, bridge port
//! and IPv4 addresses, in the host's or a container's namespace.

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

    /// Removes the addresses a link has but should not, then adds the missing ones.
    pub(super) fn addresses(
        &mut self,
        ns: Namespace,
        existing: Option<&Link>,
        dev: &IfName,
        want: &[Ipv4Net],
        object: &str,
    ) {
        let have: &[Ipv4Net] = existing.map(|l| l.addrs.as_slice()).unwrap_or(&[]);
        for address in have.iter().filter(|a| !want.contains(a)) {
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
    }
}
