//! vsum's engine: turns a manifest and a folder of videos into a cached, scheduled
//! batch of jobs. It knows manifests, graphs, scheduling, caching and events, and
//! links no media or ML library: stage kinds live in the `vsum-stages` crate.

pub mod alerts;
pub mod config;
pub mod contract;
pub mod cores;
pub mod diag;
pub mod discover;
pub mod events;
pub mod fingerprint;
pub mod fsutil;
pub mod graph;
pub mod hash;
pub mod lane;
pub mod manifest;
pub mod monitor;
pub mod params;
pub mod resources;
pub mod run;
pub mod safety;
pub mod stage;
pub mod store;
pub mod template;
pub mod time;
pub mod watch;
pub mod yaml;
