//! Routes inside a container, through an attachment's interface.
//!
//! The attachment's interface is gremesh's, and so are the routes through it: those the spec
//! lists are added or replaced, the others are deleted — except the kernel's connected route
//! of each of the interface's addresses, which comes and goes with the address. Deleting the
//! interface (detach) takes its routes with it and leaves every other route as it was.
//!
//! A route the spec lists whose destination the container already routes through another
//! device (Docker's `default via 172.17.0.1 dev eth0`, another mesh's interface) is not
//! replaced: `ip route replace` would take that route away from its owner, and detaching
//! would then leave the container without it. It is reported instead, and the rest of the
//! attachment converges.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::addressing::IfName;
use crate::desired::AttachmentSpec;
use crate::observe::{Link, RouteEntry};

use super::Action;

/// What to do about an attachment's routes.
#[derive(Debug, Default)]
pub(super) struct RouteSteps {
    /// Routes through the interface the spec no longer lists (to run before its addresses
    /// change, while their next hops are still on-link).
    pub delete: Vec<Action>,
    /// Routes to add or replace (after its addresses are in place).
    pub replace: Vec<Action>,
    /// Destinations the spec lists that another device already routes: (destination, the
    /// route found there).
    pub conflicts: Vec<(Ipv4Net, RouteEntry)>,
}

/// Plans an attachment's routes from the container's observed routes.
///
/// `observed` is the attachment's interface as observed (routes through it are never in the
/// way); `kept` is that interface when it stays as it is (not rebuilt, not renamed: a rename
/// takes the link down, which drops its routes), so its routes are compared with the spec.
/// `stale_of_other` tells routes through another attachment's interface that nobody wants any
/// more: taken over, not a conflict.
pub(super) fn plan_routes(
    a: &AttachmentSpec,
    routes: &[RouteEntry],
    observed: Option<&Link>,
    kept: Option<&Link>,
    stale_of_other: &dyn Fn(&RouteEntry) -> bool,
) -> RouteSteps {
    let mut out = RouteSteps::default();
    let through = |r: &RouteEntry, link: Option<&Link>| {
        link.is_some_and(|l| r.dev.as_deref() == Some(l.name.as_str()))
    };
    let wanted = |dst: Ipv4Net| a.routes.iter().any(|(to, _)| to.trunc() == dst);
    if let Some(k) = kept {
        for r in routes
            .iter()
            .filter(|r| through(r, kept) && !r.is_connected_of(k))
        {
            match r.destination() {
                Some(dst) if !wanted(dst) => {
                    out.delete
                        .push(route_action(false, &a.interface, dst, r.gateway))
                }
                _ => {}
            }
        }
    }
    for (to, via) in &a.routes {
        let same_dst = |r: &&RouteEntry| r.destination() == Some(to.trunc());
        if let Some(other) = routes
            .iter()
            .filter(same_dst)
            .find(|r| !through(r, observed) && !stale_of_other(r))
        {
            out.conflicts.push((*to, other.clone()));
            continue;
        }
        let present = routes
            .iter()
            .filter(same_dst)
            .any(|r| through(r, kept) && r.gateway == *via);
        if !present {
            out.replace
                .push(route_action(true, &a.interface, *to, *via));
        }
    }
    out
}

fn route_action(replace: bool, dev: &IfName, to: Ipv4Net, via: Option<Ipv4Addr>) -> Action {
    let dev = dev.clone();
    if replace {
        Action::ReplaceRoute { dev, to, via }
    } else {
        Action::DeleteRoute { dev, to, via }
    }
}
