//! Enrichment: phone numbers into GWS participant objects (E.164 forms, country, location).

pub mod countries;
pub mod geocode;
pub mod phone;

pub use phone::{Participant, PhoneBook};
