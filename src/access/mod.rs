//! Identity and access (access.md): who is who, what each principal may see, who may write events.
//!
//! The access file is read into an [`Access`]: users with their roles and devices, the JWT settings,
//! the ingest sources. Scope is decided in one place, [`Access::scope`]: every door asks it, and the
//! subscription, snapshot and REST paths take the [`crate::subscriptions::Scope`] it returns as part of
//! what they match, never as a filter added afterwards.

pub mod file;
pub mod gate;
pub mod jwt;
pub mod password;
pub mod sessions;
pub mod throttle;

pub use file::{
    Access, AccessError, Device, IngestSource, JwtKey, JwtSettings, OwnedDevice, Problem, Roles,
    Servers, User,
};
pub use gate::{Denied, Gate, Granted, Principal, Request, RequestKind};
