//! `gremesh graph`: the mesh as Graphviz DOT — hosts (with bridge and subnet), the tunnels
//! between them (solid green when up on both ends, dashed red otherwise) and the attached
//! containers. Pure: it renders a pass report (a read-only `plan` pass or the cluster's status).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::engine::PassReport;
use crate::manifest::Inventory;

/// Quotes a DOT identifier or label.
fn q(text: &str) -> String {
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// Renders every mesh of the inventory as one DOT graph.
pub fn render(inv: &Inventory, report: &PassReport) -> String {
    let mut out = String::from(
        "graph gremesh {\n  graph [fontname=\"sans-serif\", rankdir=LR, labelloc=t];\n",
    );
    out.push_str("  node [fontname=\"sans-serif\", fontsize=10];\n  edge [fontname=\"sans-serif\", fontsize=9];\n");
    for (name, mesh) in &inv.meshes {
        let mesh_report = report.meshes.iter().find(|m| &m.mesh == name);
        let _ = writeln!(
            out,
            "  subgraph {} {{\n    label={};\n    style=rounded;",
            q(&format!("cluster_mesh_{name}")),
            q(&format!(
                "mesh {name}: {} key {} {} mtu {}",
                mesh.spec.encapsulation_or_default().as_str(),
                mesh.spec.key,
                mesh.spec.network,
                mesh_report
                    .map(|m| m.mtu.to_string())
                    .unwrap_or_else(|| "?".into())
            ))
        );
        for member in &mesh.spec.hosts {
            let host = &member.name;
            let host_report = report.hosts.iter().find(|h| &h.host == host);
            let on_mesh = host_report.and_then(|h| h.meshes.iter().find(|m| &m.mesh == name));
            let label = match (on_mesh, host_report.and_then(|h| h.error.as_deref())) {
                (_, Some(error)) => {
                    format!("{host}\n{}", error.chars().take(60).collect::<String>())
                }
                (Some(m), None) => format!(
                    "{host}\nbridge {} {}\nsubnet {}",
                    m.bridge, m.gateway, m.subnet
                ),
                (None, None) => host.clone(),
            };
            let color = if host_report.is_some_and(|h| h.error.is_none() && h.converged) {
                "black"
            } else {
                "red"
            };
            let _ = writeln!(
                out,
                "    {} [label={}, shape=box3d, color={color}];",
                q(&format!("{name}/{host}")),
                q(&label)
            );
            for a in host_report
                .map(|h| h.attachments.as_slice())
                .unwrap_or(&[])
                .iter()
                .filter(|a| &a.mesh == name)
            {
                let container = inv
                    .attachments
                    .get(&a.name)
                    .map(|x| x.spec.container.as_str())
                    .unwrap_or(&a.name);
                let id = q(&format!("{name}/{host}/{}", a.name));
                let _ = writeln!(
                    out,
                    "    {id} [label={}, shape=ellipse];",
                    q(&format!("{container}\n{}", a.address.addr()))
                );
                let _ = writeln!(
                    out,
                    "    {} -- {id} [style=dotted];",
                    q(&format!("{name}/{host}"))
                );
            }
        }
        let mut drawn = BTreeSet::new();
        for a in &mesh.spec.hosts {
            for b in &mesh.spec.hosts {
                if a.name >= b.name || !drawn.insert((a.name.clone(), b.name.clone())) {
                    continue;
                }
                let up = |from: &str, to: &str| {
                    report
                        .hosts
                        .iter()
                        .find(|h| h.host == from)
                        .is_some_and(|h| {
                            h.meshes
                                .iter()
                                .any(|m| &m.mesh == name && m.peers_up.iter().any(|p| p == to))
                        })
                };
                let both = up(&a.name, &b.name) && up(&b.name, &a.name);
                let style = if both {
                    "color=darkgreen, penwidth=2"
                } else {
                    "color=red, style=dashed"
                };
                let _ = writeln!(
                    out,
                    "    {} -- {} [label={}, {style}];",
                    q(&format!("{name}/{}", a.name)),
                    q(&format!("{name}/{}", b.name)),
                    q(if both { "up" } else { "down" })
                );
            }
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}
