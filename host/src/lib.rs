//! The Keel host: runs department plugins (WebAssembly components) and gives them storage,
//! identity, logging, configuration and a clock through the `keel:platform` WIT contract,
//! and nothing else.
//!
//! Map: [`server`] wires everything and serves [`api`]; [`plugins`] keeps the installed
//! plugins, validated by [`artifact`] and [`manifest`] and prepared by [`runtime`];
//! [`storage`] holds plugin documents; [`identity`] turns tokens into principals.

#[macro_use]
mod states;

pub mod api;
pub mod artifact;
pub mod audit;
pub mod backend;
pub mod calls;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod departments;
pub mod dependencies;
pub mod devkit;
pub mod identity;
pub mod imports;
pub mod jobs;
pub mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod plugins;
pub mod portability;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod signing;
pub mod storage;
pub mod tenancy;
pub mod users;

pub use config::Config;
pub use server::{Server, StartError};
