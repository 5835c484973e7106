//! gremesh: layer-2 meshes of GRE/VXLAN tunnels between plain Docker hosts.
//!
//! The data flows through the modules in this order:
//! [`api`] (spec types) → [`manifest`] (loading) → [`validate`] → [`addressing`] →
//! [`desired`] (what each host should look like) → [`observe`] (what it looks like) →
//! [`plan`] (pure diff into steps) → [`script`] (steps rendered as commands) →
//! [`ssh`] (transport) → [`engine`] (one pass over all hosts) → CLI.

pub mod addressing;
pub mod api;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod engine;
pub mod graph;
pub mod manifest;
pub mod observe;
pub mod plan;
pub mod script;
pub mod ssh;
pub mod validate;
